"""Worst-case (adversarial) sharpness in a rho-ball, plain or adaptive (ASAM), by projected ascent.

    S_rho(w) = max_{u in B} L(w + u) - L(w),

with B = {||u||_p <= rho} (plain; p = 2 or inf) or the adaptive ball B = {||u / t_w||_p <= rho},
t_w = |w| + eta (ASAM's magnitude-aware, scale-invariant neighbourhood; Kwon et al. 2021). Writing
u = t_w * v, the maximization runs over v in the plain ball by projected gradient ascent with
``num_steps`` normalized steps of length ``step_size * rho`` (l2: along the gradient; l_inf: along its
sign), from a random point of the ball's surface (l2) or of the box (l_inf), since at a minimizer
the gradient vanishes. Every iterate is a feasible point, and the reported maximum is the best loss
seen (and at least L(w)), so the estimate is a certified lower bound on S_rho. For small rho and
p = 2, S_rho ~ rho^2 lambda_max / 2.

References:
    P. Foret, A. Kleiner, H. Mobahi, B. Neyshabur. Sharpness-aware minimization for efficiently
    improving generalization. ICLR 2021.
    J. Kwon, J. Kim, H. Park, I. K. Choi. ASAM: adaptive sharpness-aware minimization for
    scale-invariant learning of deep neural networks. ICML 2021.
    Y. Jiang, B. Neyshabur, H. Mobahi, D. Krishnan, S. Bengio. Fantastic generalization measures and
    where to find them. ICLR 2020 (worst-case sharpness).
"""

from __future__ import annotations

import dataclasses

import torch

from flatminima._checks import check_generator, check_int_in_range, check_real
from flatminima.curvature.hessian import HessianOperator
from flatminima.errors import ConfigurationError

NORMS: tuple[str, ...] = ("l2", "linf")


@dataclasses.dataclass(frozen=True)
class WorstCaseSharpness:
    """The result of :func:`worst_case_sharpness`.

    Attributes:
        value: max_loss - loss (>= 0), an absolute loss increase.
        loss: L(w).
        max_loss: the largest L(w + u) found in the ball.
        perturbation: the maximizing u as a flat (n,) vector.
        num_evaluations: loss-and-gradient evaluations spent.
    """

    value: float
    loss: float
    max_loss: float
    perturbation: torch.Tensor
    num_evaluations: int


def worst_case_sharpness(
    operator: HessianOperator,
    radius: float,
    *,
    norm: str = "l2",
    adaptive: bool = False,
    eta: float = 0.01,
    num_steps: int = 10,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> WorstCaseSharpness:
    """The largest L(w + u) - L(w) over a rho-ball, by projected gradient ascent (see the module).

    Args:
        operator: a :class:`HessianOperator`; only its selected parameters are perturbed.
        radius: rho > 0.
        norm: "l2" or "linf".
        adaptive: use ASAM's ball ||u / (|w| + eta)||_p <= rho (scale-invariant) instead of ||u||_p <= rho.
        eta: ASAM's offset (>= 0) keeping zero weights perturbable.
        num_steps: ascent steps (>= 1).
        step_size: step length as a fraction of rho (default 1 for l2, a shifted power iteration on
            quadratics; 2.5 / num_steps for l_inf, the usual projected-gradient convention).
        generator: draws the random start (required).

    Returns:
        WorstCaseSharpness(value, loss, max_loss, perturbation, num_evaluations).

    Raises:
        InputDataError: if ``radius`` <= 0, ``eta`` < 0, ``step_size`` <= 0 or ``num_steps`` < 1.
        ConfigurationError: if ``norm`` is not "l2" or "linf".
        InputTypeError: if ``generator`` is missing.

    Example:
        >>> H = HessianOperator(lambda p: (p["w"] ** 2).sum(), {"w": torch.zeros(2, dtype=torch.float64)})
        >>> result = worst_case_sharpness(H, 0.1, generator=torch.Generator().manual_seed(0))
        >>> round(result.value, 12)  # rho^2 * lambda_max / 2 with lambda_max = 2
        0.01

    References:
        Foret et al. (2021); Kwon et al. (2021); Jiang et al. (2020).
    """
    generator = check_generator("generator", generator)
    rho = check_real("radius", radius, low=0.0, low_open=True)
    check_real("eta", eta, low=0.0)
    steps = check_int_in_range("num_steps", num_steps, low=1)
    if step_size is None:
        fraction = 1.0 if norm == "l2" else 2.5 / steps
    else:
        fraction = check_real("step_size", step_size, low=0.0, low_open=True)
    alpha = rho * fraction
    if norm not in NORMS:
        raise ConfigurationError(f"norm must be 'l2' or 'linf'; got norm={norm!r}.")
    w = operator.point
    t = w.abs() + eta if adaptive else torch.ones_like(w)

    def project(v: torch.Tensor) -> torch.Tensor:
        if norm == "linf":
            return v.clamp(-rho, rho)
        return v * min(1.0, rho / max(float(torch.linalg.vector_norm(v)), 1e-300))

    z = torch.randn(w.shape, generator=generator, device=generator.device, dtype=torch.float64)
    if norm == "l2":
        v = rho * z / torch.linalg.vector_norm(z)
    else:
        v = rho * (
            2.0 * torch.rand(w.shape, generator=generator, device=generator.device, dtype=torch.float64) - 1.0
        )
    v = v.to(device=w.device, dtype=w.dtype)
    loss = float(operator.value())
    best_loss, best_u = loss, torch.zeros_like(w)
    evaluations = 0
    for step in range(steps + 1):
        u = t * v
        value, grad = operator.value_and_grad_at(w + u)
        evaluations += 1
        if float(value) > best_loss:
            best_loss, best_u = float(value), u
        if step == steps:
            break
        g = t * grad
        direction = g / max(float(torch.linalg.vector_norm(g)), 1e-300) if norm == "l2" else g.sign()
        v = project(v + alpha * direction)
    return WorstCaseSharpness(best_loss - loss, loss, best_loss, best_u, evaluations)
