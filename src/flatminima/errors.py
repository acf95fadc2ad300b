"""Exceptions raised by flatminima.

Domain errors subclass both :class:`FlatminimaError` and the matching builtin, so callers can catch
either ``flatminima.errors.InputDataError`` or plain ``ValueError``. Messages name the argument, state
the requirement and show the value.
"""

from __future__ import annotations


class FlatminimaError(Exception):
    """Base class of every error raised on purpose by flatminima."""


class InputDataError(FlatminimaError, ValueError):
    """An argument has the wrong value: out of range, wrong shape, NaN, mismatched dtype/device."""


class InputTypeError(FlatminimaError, TypeError):
    """An argument has the wrong type."""


class SingularRescalingError(InputDataError):
    """The rescaling matrices D1, D2 are singular (e.g. an unobserved row or column)."""


class ConfigurationError(InputDataError):
    """A configuration (sweep file, solver name, option) is invalid."""


class SolverError(FlatminimaError, RuntimeError):
    """A solver could not run (missing optional dependency, unsupported problem kind)."""


class MissingGroundTruthError(InputDataError):
    """A recovery metric needs the ground truth M, and the instance (built from data) has none."""
