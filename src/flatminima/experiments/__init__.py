"""Sweeps of settings x seeds: specs, the pure trial runner, executors, the SQLite store, figures.

Data flow: a TOML :class:`SweepSpec` expands into :class:`Trial` objects; :func:`run_trial` turns one
into a :class:`TrialRecord` (pure: the same trial gives the same metrics); :func:`run_sweep` submits the
trials the :class:`Store` does not hold yet to an executor (in-process or Dask) and writes each record as
it completes. Named reproductions of the paper's figures live in
:mod:`flatminima.experiments.reproductions`. Dask, pandas and matplotlib are imported lazily.

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Section 8).
"""

from flatminima.experiments import convex_methods as _convex_methods  # noqa: F401  (registers methods)
from flatminima.experiments import deep as _deep  # noqa: F401  (registers deep_flat)
from flatminima.experiments.claims import DEFAULT_LEASE_SECONDS
from flatminima.experiments.executors import DaskExecutor, InProcessExecutor, make_executor
from flatminima.experiments.methods import (
    METHODS,
    Method,
    MethodContext,
    TrialFailed,
    register_method,
    resolve_method,
)
from flatminima.experiments.spec import MAX_TRIALS, SolverSpec, SweepSpec, load_spec, parse_spec
from flatminima.experiments.store import SCHEMA_VERSION, Store, SweepSpecMismatch, records_frame
from flatminima.experiments.sweep import SweepResult, check_trial_limit, count_pending, run_sweep
from flatminima.experiments.trial import Trial, TrialRecord, run_trial, trial_instance

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "MAX_TRIALS",
    "METHODS",
    "SCHEMA_VERSION",
    "DaskExecutor",
    "InProcessExecutor",
    "Method",
    "MethodContext",
    "SolverSpec",
    "Store",
    "SweepResult",
    "SweepSpec",
    "SweepSpecMismatch",
    "Trial",
    "TrialFailed",
    "TrialRecord",
    "check_trial_limit",
    "count_pending",
    "load_spec",
    "make_executor",
    "parse_spec",
    "records_frame",
    "register_method",
    "resolve_method",
    "run_sweep",
    "run_trial",
    "trial_instance",
]
