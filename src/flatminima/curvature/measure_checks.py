"""The applicability checks :func:`~flatminima.curvature.measure.measure` runs before any work.

Owns what is known about each built-in measure ahead of running it: the options it accepts
(:data:`MEASURE_OPTIONS`), whether it draws random numbers (:data:`STOCHASTIC_MEASURES`), whether it
measures the loss itself and so needs a :class:`~flatminima.curvature.hessian.HessianOperator`
(:data:`LOSS_MEASURES`), and the check that raises the error a measure would meet on an operator (an
unknown option, a missing generator, path_norm with BatchNorm, a loss measure on a Gauss-Newton or
Fisher operator, an option value out of range for ``hochreiter_box`` or ``expected_sharpness_kl``, an
architecture the VC-dimension counts cannot read, ...) before any Hessian-vector product is spent.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flatminima._checks import check_generator, check_int_in_range
from flatminima.curvature._model import batch_norm_modules, dropout_modules
from flatminima.curvature.capacity import check_countable, model_input_shape
from flatminima.curvature.density import lanczos_spectral_density
from flatminima.curvature.epsilon import epsilon_sharpness
from flatminima.curvature.expected_sharpness import check_expected_sharpness_options, expected_sharpness_kl
from flatminima.curvature.flat_box import check_flat_box_options, flat_box
from flatminima.curvature.frobenius import exact_squared_frobenius_norm, hutchinson_squared_frobenius_norm
from flatminima.curvature.ggn_control_trace import check_control_operator, ggn_control_trace
from flatminima.curvature.gradients import gradient_variance
from flatminima.curvature.hessian import HessianOperator
from flatminima.curvature.lanczos import lanczos_eigenvalues
from flatminima.curvature.linear_operator import LinearOperator
from flatminima.curvature.pac_bayes import pac_bayes_sigma
from flatminima.curvature.trace import (
    exact_scaled_trace,
    exact_trace,
    hutchinson_scaled_trace,
    hutchinson_trace,
    hutchpp_trace,
)
from flatminima.curvature.worst_case import worst_case_sharpness
from flatminima.errors import ConfigurationError, InputDataError

#: the options of the PAC-Bayes bound (not of the sigma search) the ``pac_bayes_*`` measures accept.
_BOUND_OPTIONS = ("num_examples", "initial_weights")

#: the PAC-Bayes measures of :data:`~flatminima.curvature.measure.MEASURES`.
_PAC_BAYES = frozenset(
    {"pac_bayes_sigma", "pac_bayes_flatness", "pac_bayes_orig", "pac_bayes_init"}
    | {"magnitude_pac_bayes_sigma", "magnitude_pac_bayes_flatness"}
    | {"magnitude_pac_bayes_orig", "magnitude_pac_bayes_init"}
)
#: measures that draw random numbers, so need ``generator``.
STOCHASTIC_MEASURES: frozenset[str] = frozenset(
    {"hutchinson_trace", "hutchpp_trace", "hutchinson_scaled_trace", "hutchinson_squared_frobenius_norm"}
    | {"ggn_control_trace"}
    | {"lanczos_top_eigenvalue", "lanczos_bottom_eigenvalue", "lanczos_negative_mass", "epsilon_sharpness"}
    | {"worst_case_sharpness", "adaptive_worst_case_sharpness", *_PAC_BAYES}
    | {"hochreiter_box", "expected_sharpness_kl"}
)
#: the VC-dimension bounds of :mod:`.capacity`, read from the model's architecture.
_VC_BOUNDS = frozenset({"vc_bartlett2019", "vc_harvey2017"})
#: measures of the loss itself (perturbed weights, gradients, the model): they need a HessianOperator,
#: since a Gauss-Newton or Fisher matrix defines no loss to perturb.
LOSS_MEASURES: frozenset[str] = frozenset(
    {"epsilon_sharpness", "worst_case_sharpness", "adaptive_worst_case_sharpness", *_PAC_BAYES}
    | {"gradient_variance", "path_norm", "hochreiter_box", "expected_sharpness_kl", *_VC_BOUNDS}
)


def _accepts(function: Callable[..., Any], *, drop: Sequence[str] = (), add: Sequence[str] = ()) -> frozenset:
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = {name for name, p in inspect.signature(function).parameters.items() if p.kind in kinds}
    return frozenset((names - {"operator", "generator", *drop}) | set(add))


_LANCZOS_OPTIONS = _accepts(lanczos_eigenvalues, drop=("num_eigenvalues", "which"))
_WORST_CASE_OPTIONS = _accepts(worst_case_sharpness, drop=("adaptive",), add=("num_restarts",))
_PAC_BAYES_OPTIONS = _accepts(pac_bayes_sigma, drop=("magnitude_aware",), add=_BOUND_OPTIONS)
#: the options each built-in measure accepts (checked before any work; other registered measures are not).
MEASURE_OPTIONS: dict[str, frozenset[str]] = {
    "exact_trace": _accepts(exact_trace),
    "hutchinson_trace": _accepts(hutchinson_trace),
    "hutchpp_trace": _accepts(hutchpp_trace),
    "ggn_control_trace": _accepts(ggn_control_trace),
    "exact_scaled_trace": _accepts(exact_scaled_trace),
    "hutchinson_scaled_trace": _accepts(hutchinson_scaled_trace),
    "exact_squared_frobenius_norm": _accepts(exact_squared_frobenius_norm),
    "hutchinson_squared_frobenius_norm": _accepts(hutchinson_squared_frobenius_norm),
    "lanczos_top_eigenvalue": _LANCZOS_OPTIONS,
    "lanczos_bottom_eigenvalue": _LANCZOS_OPTIONS,
    "lanczos_negative_mass": _accepts(lanczos_spectral_density, add=("threshold",)),
    "epsilon_sharpness": _accepts(epsilon_sharpness, add=("num_restarts",)),
    "worst_case_sharpness": _WORST_CASE_OPTIONS,
    "adaptive_worst_case_sharpness": _WORST_CASE_OPTIONS,
    **{name: _PAC_BAYES_OPTIONS for name in _PAC_BAYES},
    "gradient_variance": _accepts(gradient_variance),
    "path_norm": frozenset({"input_shape"}),
    "hochreiter_box": _accepts(flat_box),
    "expected_sharpness_kl": _accepts(expected_sharpness_kl),
    **{name: frozenset({"input_shape"}) for name in _VC_BOUNDS},
}


def curvature_name(operator: LinearOperator) -> str:
    """The curvature matrix an operator is: "hessian", its ``curvature`` name, else its class name."""
    if isinstance(operator, HessianOperator):
        return "hessian"
    name = getattr(operator, "curvature", None)
    return name if isinstance(name, str) and name else type(operator).__name__


def _path_norm_shape(op: HessianOperator, options: Mapping[str, Any]) -> Any:
    """The input shape for path_norm: the option, else the first batch's; raise if there is no model."""
    return model_input_shape(op, options, "path_norm")


def _check_applicable(
    name: str, operator: LinearOperator, generator: Any, options: Mapping[str, Any]
) -> None:
    """Raise the error measure ``name`` would meet on ``operator``, before any work is done."""
    accepted = MEASURE_OPTIONS.get(name)
    if accepted is not None and set(options) - accepted:
        raise ConfigurationError(
            f"options[{name!r}] has unknown keys {sorted(set(options) - accepted)}; "
            f"{name} accepts {sorted(accepted)}."
        )
    if name in STOCHASTIC_MEASURES:
        check_generator("generator", generator)
    if "num_restarts" in options:
        check_int_in_range("num_restarts", options["num_restarts"], low=1)
    if name == "ggn_control_trace":
        check_control_operator(operator)
    if name in ("exact_scaled_trace", "hutchinson_scaled_trace") and not hasattr(operator, "block_scale"):
        raise ConfigurationError(
            f"{name} needs parameter blocks (operator.block_scale); {type(operator).__name__} has none."
        )
    if name not in LOSS_MEASURES:
        return
    if not isinstance(operator, HessianOperator):
        raise ConfigurationError(
            f"{name} measures the loss, which a {curvature_name(operator)} operator does not define; "
            "pass the model's HessianOperator (curvature_operator(..., curvature='hessian'))."
        )
    if name.endswith("pac_bayes_init") and options.get("initial_weights") is None:
        raise ConfigurationError(
            "the 'init' PAC-Bayes measures need the option initial_weights={name: tensor}."
        )
    needs_size = name.endswith(("pac_bayes_orig", "pac_bayes_init"))
    if needs_size and options.get("num_examples") is None and operator.source is None:
        raise ConfigurationError(
            f"{name} needs num_examples (the training-set size) in its options, or an operator built "
            "with HessianOperator.from_model."
        )
    if name == "hochreiter_box":
        check_flat_box_options(operator.size, options)
    if name == "expected_sharpness_kl":
        check_expected_sharpness_options(operator, options)
    if name in _VC_BOUNDS:
        check_countable(operator, options, name)
    if name == "path_norm":
        _path_norm_shape(operator, options)
        layers = batch_norm_modules(operator.source.model)  # type: ignore[union-attr]
        if layers:
            raise ConfigurationError(
                "path_norm needs BatchNorm folded into the preceding layers; "
                f"the model has {', '.join(layers)}."
            )
    if name == "gradient_variance":
        source = operator.source
        if source is None:
            raise InputDataError(
                "gradient_variance needs the model and its data; build the operator with "
                "HessianOperator.from_model(model, loss_fn, batches, mode=...)."
            )
        random_layers = batch_norm_modules(source.model) + dropout_modules(source.model)
        if options.get("unit", "example") == "example" and source.mode == "train" and random_layers:
            raise ConfigurationError(
                "per-example gradients are undefined for BatchNorm/dropout in train mode; build the "
                "operator with mode='eval' or use unit='batch'."
            )
