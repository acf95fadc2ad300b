"""Polish steps of the factor-space flat search: the spectral shortcut and the certified rank-r polish.

* :func:`revealed_rank` reads the rank off the spectral start (a dominant jump in the singular values of
  B^*(b) above the flat noise bulk);
* :func:`spectral_polish` runs Riemannian Gauss-Newton from the spectral start at that rank and certifies
  the least-squares multiplier (in the recovery regime this solves P_flat with no augmented Lagrangian);
* :func:`polish_and_certify` polishes an augmented-Lagrangian iterate whose rank has been identified
  (Gauss-Newton + multiplier correction, or Newton on the KKT system) and certifies it.

Both fall back on :func:`~.dual_search.search_dual` when the point is feasible and its multiplier on the
face but ||B^*(lambda)||_op > 1 (near the transition the least-norm multiplier can fail where another
one certifies).

References:
    Luo, Huang, Li, Zhang. Recursive importance sketching for rank constrained least squares:
    algorithms and high-order convergence (2020; Riemannian Gauss-Newton);
    Wei, Cai, Chan, Leung. Guarantees of Riemannian optimization for low rank matrix recovery (SIAM J.
    Matrix Anal. Appl. 2016); Candès and Recht (2009), Section 3.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from flatminima.solvers._deadline import NO_DEADLINE, Deadline
from flatminima.solvers.convex.certificate import Candidate, better
from flatminima.solvers.convex.dual_search import search_dual
from flatminima.solvers.convex.linear_map import ScaledMap
from flatminima.solvers.convex.newton import kkt_newton
from flatminima.solvers.convex.polish import TangentSystem, corrected_multiplier, gauss_newton
from flatminima.solvers.convex.structured import certify_structured

#: smallest singular-value ratio s_r / s_{r+1} of the spectral start that can reveal the rank r.
SPECTRAL_GAP = 1.2


def revealed_rank(singular_values: torch.Tensor) -> int | None:
    """The rank r at which the spectrum drops by a dominant jump, or None.

    The jump s_r / s_{r+1} must be at least ``SPECTRAL_GAP`` and its excess over 1 at least twice that of
    every other consecutive ratio: the noise part of B^*(b) is a flat bulk (ratios near 1), the signal
    sits above it.

    Example:
        >>> revealed_rank(torch.tensor([9.0, 8.0, 3.0, 2.9, 2.8]))
        2
        >>> revealed_rank(torch.tensor([9.0, 5.0, 3.0, 2.9])) is None
        True
    """
    ratios = singular_values[:-1] / singular_values[1:].clamp_min(torch.finfo(singular_values.dtype).tiny)
    if ratios.numel() == 0:
        return None
    excess = ratios - 1.0
    r = int(torch.argmax(excess))
    others = torch.cat([excess[:r], excess[r + 1 :]])
    largest_other = float(others.max()) if others.numel() else 0.0
    if float(ratios[r]) < SPECTRAL_GAP or float(excess[r]) < 2.0 * largest_other:
        return None
    return r + 1


def spectral_polish(
    bmap: ScaledMap,
    b: torch.Tensor,
    U0: torch.Tensor,
    s0: torch.Tensor,
    V0: torch.Tensor,
    *,
    tolerance: float,
    exact: bool,
    generator: torch.Generator,
    deadline: Deadline = NO_DEADLINE,
) -> tuple[Candidate, int] | None:
    """Certify Gauss-Newton from the spectral start, at the rank its singular-value gap reveals.

    When the top singular values of B^*(b) drop by a dominant jump after the r-th (:func:`revealed_rank`)
    and the rank-r feasible set is locally unique ((d1 + d2 - r) r <= m), Riemannian Gauss-Newton from the
    spectral start converges quadratically in the recovery regime (Luo, Huang, Li, Zhang 2020; Wei, Cai,
    Chan, Leung 2016), and the least-squares multiplier then certifies the point. Returns the candidate
    and the Gauss-Newton steps, or None without a clear gap or when Gauss-Newton does not reach
    feasibility (the augmented Lagrangian then runs as usual). Gauss-Newton stops at ``deadline``.
    """
    r = revealed_rank(s0)
    d1, d2 = bmap.shape
    if r is None or (d1 + d2 - r) * r > bmap.num_measurements:
        return None
    U, V = U0[:, :r], V0[:, :r]
    # the weight of each singular pair by least squares on b (r structured products)
    columns = torch.stack([bmap.apply_factored(U[:, i : i + 1], V[:, i : i + 1]) for i in range(r)], dim=1)
    weights = torch.linalg.lstsq(columns, b.unsqueeze(-1)).solution.squeeze(-1)
    target = 1e-2 * tolerance * float(torch.linalg.vector_norm(b))
    outcome = gauss_newton(
        bmap, b, U * weights.sign(), weights.abs(), V, symmetric=False, target=target, deadline=deadline
    )
    if min(outcome.residuals) > target or deadline.expired():
        return None
    multiplier = corrected_multiplier(
        outcome.system, None, accuracy=_multiplier_accuracy(tolerance, r), deadline=deadline
    )
    certify = _certifier(bmap, b, tolerance=tolerance, exact=exact, generator=generator)
    candidate = certify(outcome.U, outcome.s, outcome.V, multiplier, source="spectral-gauss-newton")
    searched = _dual_searched(bmap, b, outcome.system, candidate, generator=generator, deadline=deadline)
    if searched is not None and searched.certificate.satisfied:
        candidate = searched
    return candidate, len(outcome.residuals) - 1


def _multiplier_accuracy(tolerance: float, rank: int) -> float:
    """Relative accuracy of the corrected multiplier: a tangent residual 20x below the tolerance.

    :func:`~.polish.corrected_multiplier` measures it against ||U V^T||_F = sqrt(rank).
    """
    return 0.05 * tolerance / rank**0.5


def _certifier(
    bmap: ScaledMap, b: torch.Tensor, *, tolerance: float, exact: bool, generator: torch.Generator
) -> Callable[..., Candidate]:
    """(U, s, V, lambda, source=...) -> the structured KKT certificate of that candidate."""

    def certify(
        U: torch.Tensor, s: torch.Tensor, V: torch.Tensor, lam: torch.Tensor, *, source: str
    ) -> Candidate:
        return certify_structured(
            bmap, b, U, s, V, lam, tolerance=tolerance, exact=exact, generator=generator, source=source
        )

    return certify


def _dual_searched(
    bmap: ScaledMap,
    b: torch.Tensor,
    system: TangentSystem,
    candidate: Candidate | None,
    *,
    generator: torch.Generator,
    deadline: Deadline,
) -> Candidate | None:
    """The candidate's point with the multiplier of :func:`~.dual_search.search_dual`, or None.

    Only when the point is feasible and its multiplier is on the face (primal residual and duality gap
    within the tolerance) but ||B^*(lambda)||_op > 1: the point may be optimal with another multiplier.
    The new pair is certified exactly (a dense SVD of B^*(lambda), as the search made at every step): the
    block-Lanczos bound of the structured certificate carries a Ritz residual that can exceed the
    search's margin 1 - ||W||.
    """
    if candidate is None or candidate.multiplier is None or deadline.expired():
        return None
    certificate = candidate.certificate
    tolerance = certificate.tolerance
    on_face = max(certificate.relative_primal_residual, certificate.relative_duality_gap) <= tolerance
    if certificate.satisfied or not on_face:
        return None
    lam = search_dual(bmap, system, candidate.multiplier, deadline=deadline)
    if lam is None:
        return None
    U, s, V, source = candidate.U, candidate.s, candidate.V, f"{candidate.source}+dual-search"
    return certify_structured(
        bmap, b, U, s, V, lam, tolerance=tolerance, exact=True, generator=generator, source=source
    )


def polish_and_certify(
    bmap: ScaledMap,
    b: torch.Tensor,
    U: torch.Tensor,
    s: torch.Tensor,
    V: torch.Tensor,
    lam: torch.Tensor,
    *,
    tolerance: float,
    exact: bool,
    generator: torch.Generator,
    deadline: Deadline = NO_DEADLINE,
) -> Candidate:
    """Gauss-Newton feasibility at the identified rank, multiplier correction, structured certificate.

    Where the rank-r feasible set is not locally unique (dim T > m, below the recovery threshold),
    Gauss-Newton alone would stop at a feasible but non-optimal point; small problems then take Newton
    steps on the KKT system of the factored problem instead (:mod:`~flatminima.solvers.convex.newton`).
    Once ``deadline`` has passed the remaining stages are skipped and the best point so far (at worst the
    input point) is certified.
    """
    d1, d2 = bmap.shape
    r = int(s.numel())
    certify = _certifier(bmap, b, tolerance=tolerance, exact=exact, generator=generator)
    best: Candidate | None = None
    if (d1 + d2 - r) * r <= bmap.num_measurements and not deadline.expired():
        # accuracy the certificate needs, with margin: the gap is at most ||lambda|| ||B(Z) - b|| plus
        # ||Z||_F times the tangent residual, both kept 100x (20x) below tolerance * ||Z||_*
        multiplier_norm = max(float(torch.linalg.vector_norm(lam)), 1e-300)
        target = 1e-2 * tolerance * min(float(torch.linalg.vector_norm(b)), float(s.sum()) / multiplier_norm)
        outcome = gauss_newton(bmap, b, U, s, V, symmetric=False, target=target, deadline=deadline)
        accuracy = _multiplier_accuracy(tolerance, r)
        for start, source in ((lam, "factor-search-polish"), (None, "factor-search-least-squares")):
            if best is not None and deadline.expired():
                break
            corrected = corrected_multiplier(outcome.system, start, accuracy=accuracy, deadline=deadline)
            candidate = certify(outcome.U, outcome.s, outcome.V, corrected, source=source)
            best = better(best, candidate)
            if candidate.certificate.satisfied:
                return candidate
        searched = _dual_searched(bmap, b, outcome.system, best, generator=generator, deadline=deadline)
        if searched is not None and searched.certificate.satisfied:
            return searched
        best = better(best, searched)
    newton = None if deadline.expired() else kkt_newton(bmap, b, U, s, V, lam, deadline=deadline)
    if newton is not None:
        candidate = certify(newton.U, newton.s, newton.V, newton.multiplier, source="factor-search-newton")
        best = better(best, candidate)
    if best is None:  # neither polish applies: certify the point as it is
        best = certify(U, s, V, lam, source="augmented-lagrangian")
    return best
