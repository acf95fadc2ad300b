"""Expected sharpness and the KL term of its PAC-Bayes bound (Neyshabur et al. 2017).

For the posterior Q = N(w, sigma^2 I) around the weights w (u ~ N(0, sigma^2 I), sigma a standard
deviation) and a prior P = N(w0, sigma^2 I), the PAC-Bayes bound Neyshabur et al. use reads, with
probability 1 - delta over m training examples,

    E_u[L_true(w + u)] <= L(w) + (E_u[L(w + u)] - L(w)) + 4 sqrt((KL(Q || P) + log(2 m / delta)) / m),

which trades the *expected sharpness* E_u[L(w + u)] - L(w) (small for a flat minimum) against the KL term

    KL(N(w, sigma^2 I) || N(w0, sigma^2 I)) = ||w - w0||^2 / (2 sigma^2)

(small for weights close to the prior's centre). :func:`expected_sharpness_kl` returns both at one sigma:
the given one, or by default the PAC-Bayes sigma of :func:`~flatminima.curvature.pac_bayes.pac_bayes_sigma`
(the largest sigma with an estimated increase <= ``max_increase``). The expected sharpness is a Monte
Carlo mean over ``num_samples`` draws u_j = sigma z_j, z_j ~ N(0, I), fresh (independent of the sigma
search), with its standard error std_j / sqrt(num_samples); for a quadratic L it equals sigma^2 tr(H) / 2
exactly, at any w. The prior's centre w0 is ``initial_weights`` (the initialization, as in Dziugaite and
Roy 2017), else zero (Neyshabur et al.'s zero-centred prior).

References:
    B. Neyshabur, S. Bhojanapalli, D. McAllester, N. Srebro. Exploring generalization in deep learning.
    NeurIPS 2017, Section 3 (expected sharpness and the PAC-Bayes bound).
    D. McAllester. PAC-Bayesian model averaging. COLT 1999.
    G. K. Dziugaite, D. M. Roy. Computing nonvacuous generalization bounds for deep (stochastic) neural
    networks with many more parameters than training data. UAI 2017.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch

from flatminima._checks import check_generator, check_int_in_range, check_real, check_tensor
from flatminima.curvature._loss_points import LossEvaluator
from flatminima.curvature.hessian import HessianOperator
from flatminima.curvature.measure_table import MeasureValue
from flatminima.curvature.pac_bayes import pac_bayes_sigma, shared_pac_bayes_sigma
from flatminima.errors import InputDataError, InputTypeError

#: the options of the sigma search (used only without sigma), as :func:`expected_sharpness_kl` names them.
SEARCH_OPTIONS: tuple[str, ...] = (
    "max_increase",
    "relative",
    "num_bisections",
    "sigma_max",
    "search_samples",
)


@dataclasses.dataclass(frozen=True)
class ExpectedSharpness:
    """The result of :func:`expected_sharpness_kl`.

    Attributes:
        value: the expected sharpness E_u[L(w + u)] - L(w), a Monte Carlo mean.
        stderr: its standard error.
        kl: KL(N(w, sigma^2 I) || N(w0, sigma^2 I)) = ||w - w0||^2 / (2 sigma^2).
        sigma: the noise standard deviation.
        loss: L(w).
        distance_squared: ||w - w0||^2.
        prior: "initialization" (w0 = initial_weights) or "zero" (w0 = 0).
        searched: True when sigma came from the PAC-Bayes search.
        num_samples: Monte Carlo draws of the expected sharpness.
        num_evaluations: loss evaluations spent, those of the search included.
    """

    value: float
    stderr: float
    kl: float
    sigma: float
    loss: float
    distance_squared: float
    prior: str
    searched: bool
    num_samples: int
    num_evaluations: int


def expected_sharpness_kl(
    operator: HessianOperator,
    sigma: float | None = None,
    *,
    initial_weights: Mapping[str, torch.Tensor] | torch.Tensor | None = None,
    num_samples: int = 100,
    max_increase: float = 0.1,
    relative: bool = False,
    num_bisections: int = 15,
    sigma_max: float = 2.0,
    search_samples: int = 10,
    chunk_size: int = 64,
    vectorize: bool = True,
    generator: torch.Generator | None = None,
) -> ExpectedSharpness:
    """Expected sharpness E_u[L(w + u)] - L(w), u ~ N(0, sigma^2 I), with the KL term of the bound.

    Args:
        operator: a :class:`HessianOperator`; L is its loss, perturbed on its selected parameters.
        sigma: the noise standard deviation (> 0); None searches the PAC-Bayes sigma with
            :func:`~flatminima.curvature.pac_bayes.pac_bayes_sigma` (plain noise) and the options below.
        initial_weights: w0, the prior's centre: {name: tensor} holding every selected parameter, or a
            flat (n,) tensor; None for the zero-centred prior.
        num_samples: draws of the expected sharpness (>= 2, for a standard error).
        max_increase: the search's threshold (> 0; only when ``sigma`` is None, like the next three).
        relative: the search's threshold relative to L(w).
        num_bisections: the search's bisection steps (>= 1).
        sigma_max: the search's upper end (> 0).
        search_samples: the search's draws per sigma (>= 2).
        chunk_size: the most points per vmapped loss evaluation (>= 1).
        vectorize: vmap the loss over the points of a chunk where it can be.
        generator: draws the search's noise, then the sharpness noise (required).

    Returns:
        ExpectedSharpness(value, stderr, kl, sigma, loss, distance_squared, prior, searched, num_samples,
        num_evaluations).

    Raises:
        InputDataError: if a number is out of range or ``initial_weights`` misses a parameter or has
            the wrong shape.
        InputTypeError: if ``generator`` is missing, or ``initial_weights`` or ``vectorize`` has the
            wrong type.

    Example:
        >>> h = torch.tensor([1.0, 3.0], dtype=torch.float64)
        >>> w = {"w": torch.tensor([0.3, -0.4], dtype=torch.float64)}
        >>> H = HessianOperator(lambda p: 0.5 * (h * p["w"] ** 2).sum(), w)
        >>> result = expected_sharpness_kl(H, 0.1, generator=torch.Generator().manual_seed(0))
        >>> round(result.kl, 6)  # ||w||^2 / (2 sigma^2), zero-centred prior
        12.5
        >>> abs(result.value - 0.1**2 * 4.0 / 2) < 3 * result.stderr  # sigma^2 tr(H) / 2
        True

    References:
        Neyshabur, Bhojanapalli, McAllester, Srebro (2017); McAllester (1999).
    """
    generator = check_generator("generator", generator)
    _check_arguments(
        sigma=sigma,
        num_samples=num_samples,
        max_increase=max_increase,
        num_bisections=num_bisections,
        sigma_max=sigma_max,
        search_samples=search_samples,
        chunk_size=chunk_size,
        vectorize=vectorize,
    )
    w = operator.point
    w0 = _prior_centre(operator, initial_weights)
    evaluations, searched = 0, sigma is None
    if sigma is None:
        search = pac_bayes_sigma(
            operator,
            max_increase=max_increase,
            relative=relative,
            num_samples=search_samples,
            num_bisections=num_bisections,
            sigma_max=sigma_max,
            generator=generator,
        )
        evaluations += search.num_evaluations
        sigma = check_real("sigma", search.sigma, low=0.0, low_open=True)
    evaluator = LossEvaluator(operator, chunk_size=chunk_size, vectorize=vectorize)
    loss = float(evaluator.values(w[None])[0])
    s = float(sigma)

    def noisy(chunk: torch.Tensor) -> torch.Tensor:
        z = torch.randn(
            len(chunk), w.numel(), generator=generator, device=generator.device, dtype=torch.float64
        )
        return w + s * z.to(device=w.device, dtype=w.dtype)

    increases = evaluator.map(num_samples, noisy) - loss
    centre = torch.zeros_like(w) if w0 is None else w0
    distance = float((w - centre).to(torch.float64).square().sum())
    return ExpectedSharpness(
        value=float(increases.mean()),
        stderr=float(increases.std(correction=1)) / math.sqrt(num_samples),
        kl=distance / (2.0 * s**2),
        sigma=s,
        loss=loss,
        distance_squared=distance,
        prior="zero" if w0 is None else "initialization",
        searched=searched,
        num_samples=num_samples,
        num_evaluations=evaluations + evaluator.num_evaluations,
    )


def check_expected_sharpness_options(operator: HessianOperator, options: Mapping[str, Any]) -> None:
    """Raise the error :func:`expected_sharpness_kl` would raise for ``options`` on ``operator``.

    Used by :func:`~flatminima.curvature.measure.measure` before any work; unknown keys are left to
    its option check.
    """
    checked = ("sigma", "num_samples", "num_bisections", "sigma_max", "search_samples", "chunk_size")
    _check_arguments(
        **{name: options[name] for name in (*checked, "max_increase", "vectorize") if name in options}
    )
    _prior_centre(operator, options.get("initial_weights"))


def expected_sharpness_measure(
    op: HessianOperator, *, generator: Any, cache: dict, **options: Any
) -> MeasureValue:
    """Registry function of ``expected_sharpness_kl``: the sharpness with its stderr, the KL as diagnostic.

    Without ``sigma`` the PAC-Bayes sigma is shared with the ``pac_bayes_*`` rows searched with the
    same options (``search_samples`` is their ``num_samples``).
    """
    search = {key: options.pop(key) for key in SEARCH_OPTIONS if key in options}
    if options.get("sigma") is None:
        renamed = {("num_samples" if key == "search_samples" else key): v for key, v in search.items()}
        shared = shared_pac_bayes_sigma(
            op, cache, magnitude_aware=False, generator=generator, options=renamed
        )
        options["sigma"] = check_real("sigma", shared.sigma, low=0.0, low_open=True)
    result = expected_sharpness_kl(op, generator=generator, **options)
    return MeasureValue(result.value, result.stderr, 0, math.nan, "kl", result.kl, math.nan)


def _check_arguments(
    *,
    sigma: Any = None,
    num_samples: Any = 2,
    max_increase: Any = 0.1,
    num_bisections: Any = 1,
    sigma_max: Any = 1.0,
    search_samples: Any = 2,
    chunk_size: Any = 1,
    vectorize: Any = True,
) -> None:
    if sigma is not None:
        check_real("sigma", sigma, low=0.0, low_open=True)
    check_int_in_range("num_samples", num_samples, low=2)
    check_real("max_increase", max_increase, low=0.0, low_open=True)
    check_int_in_range("num_bisections", num_bisections, low=1)
    check_real("sigma_max", sigma_max, low=0.0, low_open=True)
    check_int_in_range("search_samples", search_samples, low=2)
    check_int_in_range("chunk_size", chunk_size, low=1)
    if not isinstance(vectorize, bool):
        raise InputTypeError(
            f"vectorize must be a bool; got {vectorize!r} of type {type(vectorize).__name__}."
        )


def _prior_centre(
    operator: HessianOperator, initial_weights: Mapping[str, torch.Tensor] | torch.Tensor | None
) -> torch.Tensor | None:
    """w0 as a flat (n,) tensor in the operator's dtype and device, or None for the zero prior."""
    if initial_weights is None:
        return None
    if isinstance(initial_weights, torch.Tensor):
        flat = check_tensor("initial_weights", initial_weights.detach(), shape=(operator.size,))
    elif isinstance(initial_weights, Mapping):
        missing = [name for name in operator.names if name not in initial_weights]
        if missing:
            raise InputDataError(f"initial_weights must hold every selected parameter; missing {missing}.")
        for name in operator.names:
            value = initial_weights[name]
            if not isinstance(value, torch.Tensor):
                raise InputTypeError(
                    f"initial_weights[{name!r}] must be a torch.Tensor; got {type(value).__name__}."
                )
            if tuple(value.shape) != operator.shapes[name]:
                raise InputDataError(
                    f"initial_weights[{name!r}] must have shape {operator.shapes[name]}; "
                    f"got {tuple(value.shape)}."
                )
        flat = operator.flatten({name: initial_weights[name].detach() for name in operator.names})
    else:
        raise InputTypeError(
            "initial_weights must be None, a mapping {name: tensor} or a flat tensor; "
            f"got {type(initial_weights).__name__}."
        )
    return flat.to(device=operator.device, dtype=operator.dtype)
