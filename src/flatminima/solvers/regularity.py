"""Regularity of flat solutions (Theorem 3.3): near norm-minimality and near balancedness.

For a flat solution (L_f, R_f) (the Theorem 3.2 factors of the P_flat solution, full width) and
alpha1 I <= D1, D2 <= alpha2 I, kappa = alpha2 / alpha1:

* (22) ||L_f||_F^2 + ||R_f||_F^2 <= kappa^2 min_S (||L||^2 + ||R||^2) = kappa^2 * 2 ||X_nuc||_*
  (at full width the minimum over the zero-loss set is twice the NNM value);
* Lemma 3.4: ||L_f^T L_f - R_f^T R_f||_* <= c(kappa) (||L_f||^2 + ||R_f||^2), c(kappa) = 1 - kappa^{-2};
* (23) hence ||L_f^T L_f - R_f^T R_f||_* <= c(kappa) 2 kappa^2 ||M||_* (M is itself in S).

The report also carries the paper's Figure-4 measures: the norm gap (||L_f||^2 + ||R_f||^2) - 2||X_nuc||_*
(>= 0 up to solver error) and the balancedness ||L_f^T L_f - R_f^T R_f|| in Frobenius and nuclear norm.

References:
    Ding, Drusvyatskiy, Fazel, Harchaoui (2024), Theorem 3.3, Lemma 3.4, Section 8 (Figure 4).
"""

from __future__ import annotations

import dataclasses

import torch

from flatminima._checks import check_real
from flatminima.errors import InputDataError, InputTypeError
from flatminima.problems import Instance
from flatminima.solvers.result import ConvexResult, check_ground_truth


@dataclasses.dataclass(frozen=True)
class RegularityReport:
    """Regularity measures of a flat solution and the Theorem 3.3 bounds.

    Attributes:
        kappa: condition number of (D1, D2).
        flat_norm: ||L_f||_F^2 + ||R_f||_F^2.
        nuclear_norm_nnm: ||X_nuc||_* of the norm-minimal (NNM) solution.
        norm_gap: flat_norm - 2 ||X_nuc||_*.
        balancedness_fro: ||L_f^T L_f - R_f^T R_f||_F.
        balancedness_nuc: ||L_f^T L_f - R_f^T R_f||_*.
        norm_bound: kappa^2 * 2 ||X_nuc||_* (right side of (22)).
        balancedness_bound: (1 - kappa^{-2}) * flat_norm (Lemma 3.4).
        theorem_balancedness_bound: (1 - kappa^{-2}) * 2 kappa^2 ||M||_* (right side of (23)); nan without
            a ground truth.
        slack: relative slack allowed for solver error when checking the bounds.
    """

    kappa: float
    flat_norm: float
    nuclear_norm_nnm: float
    norm_gap: float
    balancedness_fro: float
    balancedness_nuc: float
    norm_bound: float
    balancedness_bound: float
    theorem_balancedness_bound: float
    slack: float = 1e-7

    @property
    def norm_bound_holds(self) -> bool:
        """(22): flat_norm <= kappa^2 * 2 ||X_nuc||_* (up to ``slack``)."""
        return self.flat_norm <= self.norm_bound * (1 + self.slack) + self.slack

    @property
    def balancedness_bound_holds(self) -> bool:
        """Lemma 3.4 and, when the ground truth is known, (23)."""
        lemma = self.balancedness_nuc <= self.balancedness_bound * (1 + self.slack) + self.slack
        theorem = self.theorem_balancedness_bound != self.theorem_balancedness_bound or (
            self.balancedness_nuc <= self.theorem_balancedness_bound * (1 + self.slack) + self.slack
        )
        return lemma and theorem


def flat_regularity(
    flat: ConvexResult,
    nuclear: ConvexResult,
    *,
    ground_truth: torch.Tensor | None = None,
    slack: float = 1e-7,
) -> RegularityReport:
    """Regularity report of a flat solution against the norm-minimal one (Theorem 3.3).

    Args:
        flat: the result of :func:`~flatminima.solvers.solve_flat` (its factors are taken at full rank;
            zero padding does not change any measure).
        nuclear: the result of :func:`~flatminima.solvers.solve_nuclear_norm` on the same instance.
        ground_truth: M, for the bound (23) in terms of ||M||_* (None: that bound is nan).
        slack: relative tolerance for solver error in the ``*_holds`` checks.

    Returns:
        A :class:`RegularityReport`.

    Raises:
        InputTypeError: if the results are not matrix :class:`ConvexResult` objects.
        InputDataError: if ``flat`` is not a flat solution or ``nuclear`` not a norm-minimal one.

    Example:
        >>> # report = flat_regularity(solve_flat(inst), solve_nuclear_norm(inst),
        >>> #                          ground_truth=inst.ground_truth)
        >>> # report.norm_bound_holds and report.balancedness_bound_holds
    """
    for name, result in (("flat", flat), ("nuclear", nuclear)):
        if not isinstance(result, ConvexResult):
            raise InputTypeError(f"{name} must be a ConvexResult; got {type(result).__name__}.")
    check_real("slack", slack, low=0.0)
    if flat.relaxation != "flat" or nuclear.relaxation != "nuclear_norm":
        raise InputDataError(
            "flat_regularity needs a flat result and a nuclear_norm result; got "
            f"flat.relaxation={flat.relaxation!r}, nuclear.relaxation={nuclear.relaxation!r}."
        )
    if flat.symmetric:
        U1, U2 = flat.factors(max(flat.rank, 1))
        L, R = torch.cat([U1, U2], dim=1), torch.cat([U1, -U2], dim=1)
    else:
        L, R = flat.factors(max(flat.rank, 1))
    kappa = flat.rescaling_condition_number
    flat_norm = float(L.square().sum() + R.square().sum())
    nnm = float(nuclear.singular_values.sum())
    imbalance = L.mT @ L - R.mT @ R
    c = 1.0 - kappa**-2
    theorem = float("nan")
    if ground_truth is not None:
        truth = check_ground_truth(ground_truth, tuple(flat.matrix.shape))  # type: ignore[arg-type]
        truth_norm = float(torch.linalg.matrix_norm(truth.to(L), ord="nuc"))
        theorem = c * 2 * kappa**2 * truth_norm
    return RegularityReport(
        kappa=kappa,
        flat_norm=flat_norm,
        nuclear_norm_nnm=nnm,
        norm_gap=flat_norm - 2 * nnm,
        balancedness_fro=float(torch.linalg.matrix_norm(imbalance)),
        balancedness_nuc=float(torch.linalg.matrix_norm(imbalance, ord="nuc")),
        norm_bound=kappa**2 * 2 * nnm,
        balancedness_bound=c * flat_norm,
        theorem_balancedness_bound=theorem,
        slack=slack,
    )


def regularity_report(instance: Instance, **solve_options: object) -> RegularityReport:
    """Solve P_flat and NNM on ``instance`` and return the :class:`RegularityReport`.

    The bound (23) in terms of ||M||_* needs the ground truth; for an instance without one
    (``ground_truth=None``) it is nan and every other measure is reported.

    Example:
        >>> from flatminima.problems import MatrixSensing
        >>> inst = MatrixSensing(shape=(8, 8), rank=2, num_measurements=80).sample(
        ...     generator=torch.Generator().manual_seed(0))
        >>> regularity_report(inst).norm_bound_holds
        True
    """
    from flatminima.solvers.convex.solve import solve_flat, solve_nuclear_norm

    flat = solve_flat(instance, **solve_options)  # type: ignore[arg-type]
    nuclear = solve_nuclear_norm(instance, **solve_options)  # type: ignore[arg-type]
    if not isinstance(flat, ConvexResult) or not isinstance(nuclear, ConvexResult):
        raise InputDataError(f"regularity needs a matrix problem; got kind={instance.kind!r}.")
    return flat_regularity(flat, nuclear, ground_truth=instance.ground_truth)
