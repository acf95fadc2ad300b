"""One entry point for every flatness measure: ``measure(operator, names, ...)`` -> a tidy table.

Each row is one measure on one parameter group: name, group, value, stderr (NaN for deterministic
measures), the number of Hessian-vector products spent (0 for measures that only evaluate the loss or
its gradient) and error_bound, the method's deterministic error estimate where it has one (the Lanczos
eigenvalues: min(r, r^2 / gap) floored at round-off, see :mod:`flatminima.curvature.lanczos`; NaN
elsewhere). :data:`MEASURES` maps every name to its function ``f(operator, *, generator, cache,
**options) -> MeasureValue``; registering a function there makes it available to ``measure``,
sweeps and the CLI.

Measures of one noise scale (``pac_bayes_*``) share one bisection per group and option set.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from flatminima.curvature.density import lanczos_spectral_density
from flatminima.curvature.epsilon import epsilon_sharpness
from flatminima.curvature.frobenius import exact_squared_frobenius_norm, hutchinson_squared_frobenius_norm
from flatminima.curvature.gradients import gradient_variance, path_norm
from flatminima.curvature.hessian import HessianOperator
from flatminima.curvature.lanczos import lanczos_eigenvalues
from flatminima.curvature.pac_bayes import jiang_pac_bayes_bounds, pac_bayes_sigma
from flatminima.curvature.trace import (
    exact_scaled_trace,
    exact_trace,
    hutchinson_scaled_trace,
    hutchinson_trace,
    hutchpp_trace,
)
from flatminima.curvature.worst_case import worst_case_sharpness
from flatminima.errors import ConfigurationError, InputDataError, InputTypeError


@dataclasses.dataclass(frozen=True)
class MeasureValue:
    """A measure's value, standard error (NaN if deterministic), cost and error estimate (or NaN)."""

    value: float
    stderr: float = math.nan
    num_matvecs: int = 0
    error_bound: float = math.nan


@dataclasses.dataclass(frozen=True)
class MeasureRecord:
    """One row of a :class:`MeasureTable`."""

    name: str
    group: str
    value: float
    stderr: float
    num_matvecs: int
    error_bound: float = math.nan


@dataclasses.dataclass(frozen=True)
class MeasureTable:
    """The rows of :func:`measure`, one per (measure, group); convertible to records or pandas."""

    records: tuple[MeasureRecord, ...]

    def __iter__(self) -> Any:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def get(self, name: str, group: str = "all") -> MeasureRecord:
        """The row of measure ``name`` on ``group``.

        Raises:
            InputDataError: if there is no such row.
        """
        for record in self.records:
            if record.name == name and record.group == group:
                return record
        raise InputDataError(f"the table has no row for measure {name!r} on group {group!r}.")

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as a list of dicts (name, group, value, stderr, num_matvecs, error_bound)."""
        return [dataclasses.asdict(record) for record in self.records]

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (pandas is optional and imported only here).

        Raises:
            ConfigurationError: if pandas is not installed.
        """
        try:
            import pandas
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ConfigurationError(
                "to_pandas needs pandas; pip install pandas, or use to_records()."
            ) from error
        return pandas.DataFrame(
            self.to_records(), columns=["name", "group", "value", "stderr", "num_matvecs", "error_bound"]
        )


MeasureFunction = Callable[..., MeasureValue]


def _estimate(result: Any) -> MeasureValue:
    return MeasureValue(float(result.value), float(result.stderr), int(result.num_matvecs))


def _deterministic(value: torch.Tensor, num_matvecs: int) -> MeasureValue:
    return MeasureValue(float(value), math.nan, num_matvecs)


def _exact_trace(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return _deterministic(exact_trace(op, **options), op.size)


def _exact_scaled_trace(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return _deterministic(exact_scaled_trace(op, **options), op.size)


def _exact_frobenius(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return _deterministic(exact_squared_frobenius_norm(op, **options), op.size)


def _stochastic(function: Callable[..., Any]) -> MeasureFunction:
    def measure_function(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
        return _estimate(function(op, generator=generator, **options))

    measure_function.__doc__ = f"Registry wrapper of :func:`{function.__name__}`."
    return measure_function


def _eigenvalue(which: str) -> MeasureFunction:
    def measure_function(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
        result = lanczos_eigenvalues(op, 1, which=which, generator=generator, **options)
        return MeasureValue(
            float(result.eigenvalues[0]), math.nan, result.num_matvecs, float(result.error_bounds[0])
        )

    return measure_function


def _negative_mass(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    threshold = options.pop("threshold", 0.0)
    density = lanczos_spectral_density(op, generator=generator, **options)
    return _estimate(density.negative_mass_fraction(threshold))


def _epsilon(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return MeasureValue(epsilon_sharpness(op, generator=generator, **options).value)


def _worst_case(adaptive: bool) -> MeasureFunction:
    def measure_function(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
        radius = options.pop("radius", 0.05)
        result = worst_case_sharpness(op, radius, adaptive=adaptive, generator=generator, **options)
        return MeasureValue(result.value)

    return measure_function


_BOUND_OPTIONS = ("num_examples", "initial_weights")


def _pac_bayes(quantity: str, magnitude_aware: bool) -> MeasureFunction:
    def measure_function(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
        bound_options = {key: options.pop(key) for key in _BOUND_OPTIONS if key in options}
        key = ("pac_bayes", id(op), magnitude_aware, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = pac_bayes_sigma(op, magnitude_aware=magnitude_aware, generator=generator, **options)
        sigma = cache[key].sigma
        if quantity == "sigma":
            return MeasureValue(sigma)
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
            sigma,
            op.point,
            num_examples=num_examples,
            initial_weights=w0,
            magnitude_aware=magnitude_aware,
            epsilon=epsilon,
        )
        prefix = "pac_bayes_mag" if magnitude_aware else "pac_bayes"
        return MeasureValue(bounds[f"{prefix}_{quantity}"])

    return measure_function


def _gradient_variance(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    return MeasureValue(float(gradient_variance(op, **options)))


def _path_norm(op: HessianOperator, *, generator: Any, cache: dict, **options: Any) -> MeasureValue:
    if op.source is None:
        raise InputDataError("path_norm needs a model; build the operator with HessianOperator.from_model.")
    inputs = op.source.batches[0][0]
    if not isinstance(inputs, torch.Tensor):
        raise InputDataError("path_norm needs models with a single input tensor.")
    shape = options.get("input_shape", tuple(int(s) for s in inputs.shape[1:]))
    return MeasureValue(float(path_norm(op.source.model, shape)))


#: registry: measure name -> function(operator, *, generator, cache, **options) -> MeasureValue.
MEASURES: dict[str, MeasureFunction] = {
    "exact_trace": _exact_trace,
    "hutchinson_trace": _stochastic(hutchinson_trace),
    "hutchpp_trace": _stochastic(hutchpp_trace),
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
}

#: measures of the whole model, reported for the group "all" only.
WHOLE_MODEL_MEASURES: frozenset[str] = frozenset({"path_norm"})

GroupSpec = str | Mapping[str, str | int | Sequence[str | int]] | None


def measure(
    operator: HessianOperator,
    measures: str | Sequence[str],
    *,
    generator: torch.Generator | None = None,
    groups: GroupSpec = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> MeasureTable:
    """Compute the chosen measures at the operator's point, for the whole selection and per group.

    Args:
        operator: a :class:`HessianOperator` (its current selection is the group "all").
        measures: names from :data:`MEASURES` (or one name).
        generator: the random stream shared by the stochastic measures (required by them); the
            measures draw from it in the order given, so a table is reproducible from one seed.
        groups: None (only "all"), "parameter" or "module" (see ``HessianOperator.groups``), or a
            mapping from group names to selectors (names, glob patterns or indices).
        options: keyword arguments per measure name, e.g. ``{"hutchinson_trace": {"rtol": 0.01}}``.

    Returns:
        A :class:`MeasureTable` with rows (name, group, value, stderr, num_matvecs), measures in the
        given order, groups "all" first.

    Raises:
        ConfigurationError: for an unknown measure name or options for a measure not requested.
        InputTypeError: if ``operator`` is not a HessianOperator or a stochastic measure has no generator.

    Example:
        >>> w = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(1, dtype=torch.float64)}
        >>> H = HessianOperator(lambda p: (p["a"] ** 2).sum() + 3 * (p["b"] ** 2).sum(), w)
        >>> table = measure(H, ["exact_trace", "lanczos_top_eigenvalue"], groups="parameter",
        ...                 generator=torch.Generator().manual_seed(0))
        >>> [(r.name, r.group, round(r.value, 6)) for r in table][:3]
        [('exact_trace', 'all', 10.0), ('exact_trace', 'a', 4.0), ('exact_trace', 'b', 6.0)]
    """
    if not isinstance(operator, HessianOperator):
        raise InputTypeError(f"operator must be a HessianOperator; got {type(operator).__name__}.")
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
    selections = _groups(operator, groups)
    cache: dict[Any, Any] = {}
    records = []
    for name in names:
        for group, op in selections.items():
            if group != "all" and name in WHOLE_MODEL_MEASURES:
                continue
            result = MEASURES[name](op, generator=generator, cache=cache, **dict(options.get(name, {})))
            records.append(MeasureRecord(name, group, *dataclasses.astuple(result)))
    return MeasureTable(tuple(records))


def _groups(operator: HessianOperator, groups: GroupSpec) -> dict[str, HessianOperator]:
    selections = {"all": operator}
    if groups is None:
        return selections
    if isinstance(groups, str):
        for group, members in operator.groups(groups).items():
            selections[group] = operator.select(*members)
        return selections
    if not isinstance(groups, Mapping):
        raise InputTypeError(
            f"groups must be None, 'parameter', 'module' or a mapping; got {type(groups).__name__}."
        )
    for group, selectors in groups.items():
        if group == "all":
            raise ConfigurationError("the group name 'all' is reserved for the whole selection.")
        listed = [selectors] if isinstance(selectors, str | int) else list(selectors)
        selections[group] = operator.select(*listed)
    return selections
