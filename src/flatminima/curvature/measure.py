"""One entry point for every flatness measure: ``measure(operator, names, ...)`` -> a tidy table.

Each row is one measure on one parameter group: name, group, value, stderr (the standard error of value;
NaN for deterministic measures), the number of Hessian-vector products spent (0 for measures that only
evaluate the loss or its gradient), error_bound (the method's deterministic error estimate where it has
one: the Lanczos eigenvalues, min(r, r^2 / gap) floored at round-off, see
:mod:`flatminima.curvature.lanczos`; NaN elsewhere), a diagnostic (the name, value and standard error of
a Monte Carlo quantity behind the value: the PAC-Bayes rows carry the estimated loss increase
E[L(w + u)] - L(w) at sigma, whose threshold defines sigma; sharpness over ``num_restarts`` >= 2 random
starts reports the mean over restarts with its standard error and the best restart as the diagnostic;
``hochreiter_box`` the fraction of verification points violating its box, ``expected_sharpness_kl``
its KL term, without standard error),
the curvature matrix measured ("hessian", "ggn", "fisher", "empirical_fisher", see
:func:`~flatminima.curvature.curvature_matrices.curvature_operator`) and error, the reason a measure
failed (None when it ran).

Applicability is checked before any work: a measure that cannot apply (path_norm with BatchNorm, a
loss-perturbation measure on a Gauss-Newton or Fisher operator, a stochastic measure without generator,
an unknown option, ...) raises one error up front. A measure that fails while running keeps the table:
its row holds NaN and the reason, with a :class:`MeasureFailureWarning` (``on_error="raise"`` re-raises).

:data:`MEASURES` maps every name to its function ``f(operator, *, generator, cache, **options) ->
MeasureValue``; registering a function there makes it available to ``measure``, sweeps and the CLI.
Measures of one noise scale (``pac_bayes_*``) share one bisection per group and option set.

The table types live in :mod:`.measure_table` and the applicability checks in :mod:`.measure_checks`;
this module owns :func:`measure`, the registry :data:`MEASURES` and the measure functions, and
re-exports the names of both.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from flatminima._checks import check_int_in_range
from flatminima.curvature._model import CurvatureWarning
from flatminima.curvature.capacity import vc_bartlett2019_measure, vc_harvey2017_measure
from flatminima.curvature.density import lanczos_spectral_density
from flatminima.curvature.epsilon import epsilon_sharpness
from flatminima.curvature.expected_sharpness import expected_sharpness_measure
from flatminima.curvature.flat_box import flat_box_measure
from flatminima.curvature.frobenius import exact_squared_frobenius_norm, hutchinson_squared_frobenius_norm
from flatminima.curvature.ggn_control_trace import ggn_control_trace
from flatminima.curvature.gradients import gradient_variance, path_norm
from flatminima.curvature.hessian import HessianOperator
from flatminima.curvature.lanczos import lanczos_eigenvalues
from flatminima.curvature.linear_operator import LinearOperator
from flatminima.curvature.measure_checks import (
    _BOUND_OPTIONS,
    _check_applicable,
    _path_norm_shape,
    curvature_name,
)
from flatminima.curvature.measure_checks import LOSS_MEASURES as LOSS_MEASURES
from flatminima.curvature.measure_checks import MEASURE_OPTIONS as MEASURE_OPTIONS
from flatminima.curvature.measure_checks import STOCHASTIC_MEASURES as STOCHASTIC_MEASURES
from flatminima.curvature.measure_table import COLUMNS as COLUMNS
from flatminima.curvature.measure_table import MeasureRecord, MeasureTable, MeasureValue
from flatminima.curvature.pac_bayes import jiang_pac_bayes_bounds, shared_pac_bayes_sigma
from flatminima.curvature.trace import (
    exact_scaled_trace,
    exact_trace,
    hutchinson_scaled_trace,
    hutchinson_trace,
    hutchpp_trace,
)
from flatminima.curvature.worst_case import worst_case_sharpness
from flatminima.errors import ConfigurationError, InputTypeError


class MeasureFailureWarning(CurvatureWarning):
    """A measure failed while running; :func:`measure` kept the table and recorded the reason in its row."""


MeasureFunction = Callable[..., MeasureValue]


def _estimate(result: Any) -> MeasureValue:
    return MeasureValue(float(result.value), float(result.stderr), int(result.num_matvecs))


def _deterministic(value: torch.Tensor, num_matvecs: int) -> MeasureValue:
    return MeasureValue(float(value), math.nan, num_matvecs)


def _exact_trace(op: Any, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return _deterministic(exact_trace(op, **options), op.size)


def _exact_scaled_trace(op: Any, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return _deterministic(exact_scaled_trace(op, **options), op.size)


def _exact_frobenius(op: Any, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return _deterministic(exact_squared_frobenius_norm(op, **options), op.size)


def _stochastic(function: Callable[..., Any]) -> MeasureFunction:
    def measure_function(op: Any, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
        return _estimate(function(op, generator=generator, **options))

    measure_function.__doc__ = f"Registry wrapper of :func:`{function.__name__}`."
    return measure_function


def _eigenvalue(which: str) -> MeasureFunction:
    def measure_function(op: Any, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
        result = lanczos_eigenvalues(op, 1, which=which, generator=generator, **options)
        return MeasureValue(
            float(result.eigenvalues[0]), math.nan, result.num_matvecs, float(result.error_bounds[0])
        )

    return measure_function


def _negative_mass(op: Any, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    threshold = options.pop("threshold", 0.0)
    density = lanczos_spectral_density(op, generator=generator, **options)
    return _estimate(density.negative_mass_fraction(threshold))


def _restarted(run: Callable[[], float], num_restarts: Any) -> MeasureValue:
    """One run, or the mean of ``num_restarts`` >= 2 random restarts with its standard error (best kept)."""
    count = check_int_in_range("num_restarts", num_restarts, low=1)
    values = [run() for _ in range(count)]
    if count == 1:
        return MeasureValue(values[0])
    stderr = statistics.stdev(values) / math.sqrt(count)
    return MeasureValue(statistics.fmean(values), stderr, 0, math.nan, "max_over_restarts", max(values))


def _epsilon(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    restarts = options.pop("num_restarts", 1)
    return _restarted(lambda: epsilon_sharpness(op, generator=generator, **options).value, restarts)


def _worst_case(adaptive: bool) -> MeasureFunction:
    def measure_function(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
        radius, restarts = options.pop("radius", 0.05), options.pop("num_restarts", 1)
        return _restarted(
            lambda: worst_case_sharpness(op, radius, adaptive=adaptive, generator=generator, **options).value,
            restarts,
        )

    return measure_function


def _pac_bayes(quantity: str, magnitude_aware: bool) -> MeasureFunction:
    def measure_function(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
        bound_options = {key: options.pop(key) for key in _BOUND_OPTIONS if key in options}
        result = shared_pac_bayes_sigma(
            op, cache, magnitude_aware=magnitude_aware, generator=generator, options=options
        )
        diagnostic = ("loss_increase", result.increase, result.increase_stderr)
        if quantity == "sigma":
            return MeasureValue(result.sigma, math.nan, 0, math.nan, *diagnostic)
        num_examples = bound_options.get("num_examples")
        if num_examples is None and op.source is not None:
            num_examples = op.source.num_examples
        if num_examples is None:
            num_examples = 1  # only the "flatness" measure is asked for without data; it ignores m
            if quantity != "flatness":
                raise ConfigurationError(
                    f"pac_bayes_{quantity} needs num_examples (the training-set size) in its options, "
                    "or an operator built with HessianOperator.from_model."
                )
        initial = bound_options.get("initial_weights")
        if quantity == "init" and initial is None:
            raise ConfigurationError(
                "the 'init' PAC-Bayes measures need the option initial_weights={name: tensor}."
            )
        w0 = op.flatten({name: t.detach() for name, t in initial.items()}) if initial is not None else None
        epsilon = options.get("epsilon", 1e-3)
        bounds = jiang_pac_bayes_bounds(
            result.sigma,
            op.point,
            num_examples=num_examples,
            initial_weights=w0,
            magnitude_aware=magnitude_aware,
            epsilon=epsilon,
        )
        prefix = "pac_bayes_mag" if magnitude_aware else "pac_bayes"
        return MeasureValue(bounds[f"{prefix}_{quantity}"], math.nan, 0, math.nan, *diagnostic)

    return measure_function


def _gradient_variance(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return MeasureValue(float(gradient_variance(op, **options)))


def _path_norm(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return MeasureValue(float(path_norm(op.source.model, _path_norm_shape(op, options))))  # type: ignore[union-attr]


#: registry: measure name -> function(operator, *, generator, cache, **options) -> MeasureValue.
MEASURES: dict[str, MeasureFunction] = {
    "exact_trace": _exact_trace,
    "hutchinson_trace": _stochastic(hutchinson_trace),
    "hutchpp_trace": _stochastic(hutchpp_trace),
    "ggn_control_trace": _stochastic(ggn_control_trace),
    "exact_scaled_trace": _exact_scaled_trace,
    "hutchinson_scaled_trace": _stochastic(hutchinson_scaled_trace),
    "exact_squared_frobenius_norm": _exact_frobenius,
    "hutchinson_squared_frobenius_norm": _stochastic(hutchinson_squared_frobenius_norm),
    "lanczos_top_eigenvalue": _eigenvalue("largest"),
    "lanczos_bottom_eigenvalue": _eigenvalue("smallest"),
    "lanczos_negative_mass": _negative_mass,
    "epsilon_sharpness": _epsilon,
    "worst_case_sharpness": _worst_case(adaptive=False),
    "adaptive_worst_case_sharpness": _worst_case(adaptive=True),
    "pac_bayes_sigma": _pac_bayes("sigma", magnitude_aware=False),
    "pac_bayes_flatness": _pac_bayes("flatness", magnitude_aware=False),
    "pac_bayes_orig": _pac_bayes("orig", magnitude_aware=False),
    "pac_bayes_init": _pac_bayes("init", magnitude_aware=False),
    "magnitude_pac_bayes_sigma": _pac_bayes("sigma", magnitude_aware=True),
    "magnitude_pac_bayes_flatness": _pac_bayes("flatness", magnitude_aware=True),
    "magnitude_pac_bayes_orig": _pac_bayes("orig", magnitude_aware=True),
    "magnitude_pac_bayes_init": _pac_bayes("init", magnitude_aware=True),
    "gradient_variance": _gradient_variance,
    "path_norm": _path_norm,
    "hochreiter_box": flat_box_measure,
    "expected_sharpness_kl": expected_sharpness_measure,
    "vc_bartlett2019": vc_bartlett2019_measure,
    "vc_harvey2017": vc_harvey2017_measure,
}

#: measures of the whole model, reported for the group "all" only.
WHOLE_MODEL_MEASURES: frozenset[str] = frozenset({"path_norm", "vc_bartlett2019", "vc_harvey2017"})

GroupSpec = str | Mapping[str, str | int | Sequence[str | int]] | None


def measure(
    operator: LinearOperator,
    measures: str | Sequence[str],
    *,
    generator: torch.Generator | None = None,
    groups: GroupSpec = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    on_error: str = "record",
) -> MeasureTable:
    """Compute the chosen measures at the operator's point, for the whole selection and per group.

    Args:
        operator: a :class:`HessianOperator` (its current selection is the group "all"), or another
            curvature matrix from :func:`~flatminima.curvature.curvature_matrices.curvature_operator`
            (generalized Gauss-Newton, Fisher, empirical Fisher) for the spectral measures (traces,
            Frobenius norms, Lanczos); any :class:`LinearOperator` without groups.
        measures: names from :data:`MEASURES` (or one name).
        generator: the random stream shared by the stochastic measures (required by them); the
            measures draw from it in the order given, so a table is reproducible from one seed.
        groups: None (only "all"), "parameter" or "module" (see ``HessianOperator.groups``), or a
            mapping from group names to selectors (names, glob patterns or indices).
        options: keyword arguments per measure name, e.g. ``{"hutchinson_trace": {"rtol": 0.01}}``;
            the sharpness measures also take ``num_restarts`` (random starts; >= 2 gives a stderr).
        on_error: "record" (a measure that fails while running gets a row with value NaN and the
            reason in ``error``, with a :class:`MeasureFailureWarning`) or "raise".

    Returns:
        A :class:`MeasureTable` with rows (name, group, value, stderr, num_matvecs, error_bound,
        diagnostic, diagnostic_value, diagnostic_stderr, curvature, error), measures in the given
        order, groups "all" first.

    Raises:
        ConfigurationError: before any work, for an unknown measure, option or ``on_error``, options
            for a measure not requested, a measure that cannot apply to the operator (a loss measure on
            a Gauss-Newton or Fisher operator, path_norm with BatchNorm, a missing initial_weights or
            num_examples, groups on an operator without them, an architecture the VC-dimension
            bounds cannot read).
        InputTypeError: if ``operator`` is not a LinearOperator or a stochastic measure has no generator.
        InputDataError: if path_norm, gradient_variance or a VC-dimension bound is asked of an
            operator without a model, or an option of hochreiter_box or expected_sharpness_kl is out
            of range (also before any work).

    Example:
        >>> w = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(1, dtype=torch.float64)}
        >>> H = HessianOperator(lambda p: (p["a"] ** 2).sum() + 3 * (p["b"] ** 2).sum(), w)
        >>> table = measure(H, ["exact_trace", "lanczos_top_eigenvalue"], groups="parameter",
        ...                 generator=torch.Generator().manual_seed(0))
        >>> [(r.name, r.group, round(r.value, 6)) for r in table][:3]
        [('exact_trace', 'all', 10.0), ('exact_trace', 'a', 4.0), ('exact_trace', 'b', 6.0)]
    """
    if not isinstance(operator, LinearOperator):
        raise InputTypeError(
            f"operator must be a HessianOperator or another LinearOperator; got {type(operator).__name__}."
        )
    if on_error not in ("record", "raise"):
        raise ConfigurationError(f"on_error must be 'record' or 'raise'; got on_error={on_error!r}.")
    names = [measures] if isinstance(measures, str) else list(measures)
    unknown = [name for name in names if name not in MEASURES]
    if unknown:
        raise ConfigurationError(
            f"unknown measure {', '.join(map(repr, unknown))}; known measures: {', '.join(sorted(MEASURES))}."
        )
    options = dict(options or {})
    stray = sorted(set(options) - set(names))
    if stray:
        raise ConfigurationError(f"options given for measures that were not requested: {stray}.")
    for name in names:
        _check_applicable(name, operator, generator, options.get(name, {}))
    selections = _groups(operator, groups)
    curvature = curvature_name(operator)
    cache: dict[Any, Any] = {}
    records = []
    for name in names:
        for group, op in selections.items():
            if group != "all" and name in WHOLE_MODEL_MEASURES:
                continue
            try:
                result = MEASURES[name](op, generator=generator, cache=cache, **dict(options.get(name, {})))
            except Exception as failure:
                if on_error == "raise":
                    raise
                reason = " ".join(f"{type(failure).__name__}: {failure}".split())
                warnings.warn(
                    f"measure {name!r} failed on group {group!r}; its row holds NaN: {reason}",
                    MeasureFailureWarning,
                    stacklevel=2,
                )
                records.append(
                    MeasureRecord(name, group, math.nan, math.nan, 0, curvature=curvature, error=reason)
                )
                continue
            records.append(MeasureRecord(name, group, **dataclasses.asdict(result), curvature=curvature))
    return MeasureTable(tuple(records))


def _groups(operator: LinearOperator, groups: GroupSpec) -> dict[str, Any]:
    selections: dict[str, Any] = {"all": operator}
    if groups is None:
        return selections
    if not callable(getattr(operator, "select", None)) or not callable(getattr(operator, "groups", None)):
        raise ConfigurationError(
            f"groups need an operator with parameter groups (select and groups); {type(operator).__name__} "
            "has none. Use groups=None."
        )
    if isinstance(groups, str):
        for group, members in operator.groups(groups).items():  # type: ignore[attr-defined]
            selections[group] = operator.select(*members)  # type: ignore[attr-defined]
        return selections
    if not isinstance(groups, Mapping):
        raise InputTypeError(
            f"groups must be None, 'parameter', 'module' or a mapping; got {type(groups).__name__}."
        )
    for group, selectors in groups.items():
        if group == "all":
            raise ConfigurationError("the group name 'all' is reserved for the whole selection.")
        listed = [selectors] if isinstance(selectors, str | int) else list(selectors)
        selections[group] = operator.select(*listed)  # type: ignore[attr-defined]
    return selections
