"""Sweep methods of the reproductions beyond the paper: completion with mask counts, noisy relaxations.

They are named ``"flatminima.experiments.beyond_methods:<function>"`` in the sweep specs of
:mod:`flatminima.experiments.reproductions_beyond`, so that every Dask worker imports them (they are not
in the :data:`~flatminima.experiments.methods.METHODS` registry). Each wraps the registered ``flat`` or
``nuclear_norm`` method (same solver, same options, same metrics) and adds:

* ``completion_flat``, ``completion_nuclear_norm``: ``num_observations`` (m), ``empty_lines`` (unobserved
  rows plus columns) and ``singular``; a flat solve with a singular D1, D2 (an unobserved line) becomes a
  failed trial with ``singular = True`` instead of a crash, so figures can count such trials.
* ``noisy_flat``, ``noisy_nuclear_norm``: the ball-constrained relaxation min ||Z||_* s.t.
  ||B(Z) - b||_2 <= eps (the noisy version of Ding et al. 2024, Appendix A) with eps from the option
  ``eps_rule``:
  ``"expected"`` (default) eps = sigma sqrt(m + 2 sqrt(2 m)), the mean plus two standard deviations of
  ||sigma e||^2 ~ sigma^2 chi^2_m (Candès & Plan 2010; it uses the noise level, not the draw's noise), or
  ``"oracle"`` eps = 1.05 ||e||_2 (the draw's noise). Metrics: ``eps``, ``noise_norm``,
  ``bound_unit`` = eps / sqrt(m) and ``bound_ratio`` = error sqrt(m) / eps, the constant C of the
  stable-recovery bound ||X - M||_F <= C eps / sqrt(m) this trial needs.

References:
    E. Candès, Y. Plan. Matrix completion with noise. Proc. IEEE 98(6), 2010.
    E. Candès, Y. Plan. Tight oracle inequalities for low-rank matrix recovery from a minimal number of
    noisy random measurements. IEEE Trans. Inf. Theory 57(4), 2011.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from flatminima.errors import ConfigurationError, SingularRescalingError
from flatminima.experiments.methods import MethodContext, Metrics, TrialFailed, resolve_method
from flatminima.problems import Instance


def _completion(relaxation: str) -> Any:
    def run(instance: Instance, options: Mapping[str, Any], context: MethodContext) -> Metrics:
        info: Metrics = {
            "num_observations": instance.num_measurements,
            "empty_lines": len(instance.metadata.get("empty_rows", []))
            + len(instance.metadata.get("empty_columns", [])),
            "singular": False,
        }
        try:
            metrics = resolve_method(relaxation).function(instance, options, context)
        except TrialFailed as failure:
            failure.metrics.update(info)
            raise
        except SingularRescalingError:
            raise TrialFailed(
                f"{context.label}: singular D1, D2 ({info['empty_lines']} unobserved rows and columns)",
                {**info, "singular": True},
            ) from None
        return {**metrics, **info}

    run.__doc__ = (
        f"The {relaxation} relaxation of a completion instance, with the number of observations, the "
        "number of unobserved lines and whether D1, D2 were singular (a failed trial)."
    )
    return run


completion_flat = _completion("flat")
completion_nuclear_norm = _completion("nuclear_norm")


def noise_radius(noise_std: float, num_measurements: int) -> float:
    """The ball radius eps = sigma sqrt(m + 2 sqrt(2 m)): mean + 2 standard deviations of sigma^2 chi^2_m.

    ||sigma e||_2 <= eps with probability about 0.98 for e ~ N(0, I_m) (Candès & Plan 2010).

    Example:
        >>> round(noise_radius(0.1, 128), 4)
        1.2649
    """
    m = float(num_measurements)
    return noise_std * math.sqrt(m + 2.0 * math.sqrt(2.0 * m))


def _noisy(relaxation: str) -> Any:
    def run(instance: Instance, options: Mapping[str, Any], context: MethodContext) -> Metrics:
        kwargs = dict(options)
        rule = kwargs.pop("eps_rule", "expected")
        sigma = float(instance.metadata.get("noise_std", 0.0))
        m = instance.num_measurements
        noise = instance.extras.get("noise")
        noise_norm = 0.0 if noise is None else float(noise.square().sum().sqrt())
        if rule == "expected":
            eps = noise_radius(sigma, m)
        elif rule == "oracle":
            eps = 1.05 * noise_norm
        else:
            raise ConfigurationError(f"eps_rule: must be 'expected' or 'oracle', got {rule!r}")
        info: Metrics = {"eps": eps, "noise_norm": noise_norm, "bound_unit": eps / math.sqrt(m)}
        try:
            metrics = resolve_method(relaxation).function(instance, {**kwargs, "eps": eps}, context)
        except TrialFailed as failure:
            failure.metrics.update(info)
            raise
        ratio = metrics["error"] / info["bound_unit"] if eps > 0 else math.nan
        return {**metrics, **info, "bound_ratio": ratio}

    run.__doc__ = (
        f"The noisy {relaxation} relaxation, ||B(Z) - b|| <= eps with eps from option eps_rule: "
        "'expected' sigma sqrt(m + 2 sqrt(2m)) (default) or 'oracle' 1.05 ||noise||; reports eps, "
        "||noise||, eps / sqrt(m) and error sqrt(m) / eps."
    )
    return run


noisy_flat = _noisy("flat")
noisy_nuclear_norm = _noisy("nuclear_norm")
