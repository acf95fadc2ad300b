"""Solvers: flat solutions (P_flat) and norm-minimal solutions (NNM), with certificates.

``solve_flat(instance)`` and ``solve_nuclear_norm(instance)`` return a :class:`ConvexResult`
(``.matrix``, ``.factors(width)``, ``.certificate``, ``.status``) or, for sparse recovery with depth, an
:class:`LpResult`. :func:`flat_regularity` reports kappa(D1, D2), the norm gap to NNM and the
balancedness of the flat factors with the Theorem 3.3 bounds.
"""

from flatminima.solvers.convex import LpResult, solve_flat, solve_nuclear_norm
from flatminima.solvers.regularity import RegularityReport, flat_regularity, regularity_report
from flatminima.solvers.result import Certificate, ConvexResult, Status

__all__ = [
    "Certificate",
    "ConvexResult",
    "LpResult",
    "RegularityReport",
    "Status",
    "flat_regularity",
    "regularity_report",
    "solve_flat",
    "solve_nuclear_norm",
]
