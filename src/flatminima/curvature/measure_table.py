"""The table :func:`~flatminima.curvature.measure.measure` returns: its value, row and table types.

:class:`MeasureValue` is what one measure function returns (value, standard error, cost, error
estimate, diagnostic); :class:`MeasureRecord` is one row of the table, a value with its measure name,
parameter group, curvature matrix and failure reason; :class:`MeasureTable` holds the rows and converts
them to records or a pandas DataFrame with the columns :data:`COLUMNS`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from flatminima.errors import ConfigurationError, InputDataError


@dataclasses.dataclass(frozen=True)
class MeasureValue:
    """A measure's value, standard error (NaN if deterministic), cost, error estimate and diagnostic.

    ``diagnostic`` names a Monte Carlo quantity behind the value (e.g. "loss_increase" for PAC-Bayes),
    with its estimate and standard error; None and NaN when there is none.
    """

    value: float
    stderr: float = math.nan
    num_matvecs: int = 0
    error_bound: float = math.nan
    diagnostic: str | None = None
    diagnostic_value: float = math.nan
    diagnostic_stderr: float = math.nan


@dataclasses.dataclass(frozen=True)
class MeasureRecord:
    """One row of a :class:`MeasureTable` (``error`` is the failure reason, None when the measure ran)."""

    name: str
    group: str
    value: float
    stderr: float
    num_matvecs: int
    error_bound: float = math.nan
    diagnostic: str | None = None
    diagnostic_value: float = math.nan
    diagnostic_stderr: float = math.nan
    curvature: str = "hessian"
    error: str | None = None


#: the columns of :meth:`MeasureTable.to_pandas`, in order.
COLUMNS: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(MeasureRecord))


@dataclasses.dataclass(frozen=True)
class MeasureTable:
    """The rows of :func:`~.measure.measure`, one per (measure, group); convertible to records or pandas."""

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

    @property
    def failures(self) -> tuple[MeasureRecord, ...]:
        """The rows of measures that failed (their ``error`` says why)."""
        return tuple(record for record in self.records if record.error is not None)

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as a list of dicts, one key per column of :data:`COLUMNS`."""
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
        return pandas.DataFrame(self.to_records(), columns=list(COLUMNS))
