"""One trial of a sweep: its canonical key, its random streams, and the pure function that runs it.

A :class:`Trial` names a problem with its parameters, a method with its options, a base seed and a draw
index. Its key is the SHA-256 of its canonical JSON (sorted keys, no spaces), so the same trial always
has the same key and a rerun of a sweep skips what the store already holds.

Random streams (all from :mod:`flatminima.random`, independent of the method, so changing the solver
never changes the instance):

* ``truth``: seeded by (seed, problem, parameters): with ``truth = "cell"`` every draw of a grid cell
  measures the **same** ground truth M (Ding et al., Section 8: one M per cell, 10 measurement draws);
* ``instance``, ``init``, ``solver``: seeded by (seed, problem, parameters, draw).

References:
    L. Ding, D. Drusvyatskiy, M. Fazel, Z. Harchaoui. Flat minima generalize for low-rank matrix
    recovery. Information and Inference 13(2), 2024 (Section 8).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import math
import socket
import time
from collections.abc import Mapping
from typing import Any

import torch

from flatminima.errors import ConfigurationError
from flatminima.experiments.methods import MethodContext, TrialFailed, resolve_method
from flatminima.problems import PROBLEMS, Instance, Problem
from flatminima.random import child_generators, derive_seed, make_generator

#: the two ways to draw ground truths: one per grid cell (the paper's protocol) or one per draw.
TRUTH_MODES = ("cell", "draw")
_MAX_ERROR_CHARS = 2000


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def trial_key(trial: Mapping[str, Any]) -> str:
    """The key of a trial as JSON values (:meth:`Trial.to_dict`): SHA-256 (hex, 32) of its canonical JSON."""
    return hashlib.sha256(canonical_json(dict(trial)).encode()).hexdigest()[:32]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One (grid cell, draw, method) of a sweep.

    Attributes:
        sweep: the sweep's name (part of the key, so two sweeps never share rows).
        problem: the problem's registry name (``flatminima.problems.PROBLEMS``).
        params: the problem's keyword arguments as JSON values (``shape`` as a list).
        cell: the grid coordinates of this trial (for tables and figures).
        method: the method's registry name or ``"module:function"``.
        label: the method's label in the sweep (unique within the sweep).
        options: the method's options.
        seed: the sweep's base seed.
        draw: the draw index within the cell (0 <= draw < draws).
        truth: ``"cell"`` (one ground truth per cell) or ``"draw"`` (one per draw).
        tolerance: success iff the Frobenius recovery error is < tolerance.
    """

    sweep: str
    problem: str
    params: Mapping[str, Any]
    cell: Mapping[str, Any]
    method: str
    label: str
    options: Mapping[str, Any]
    seed: int
    draw: int
    truth: str = "cell"
    tolerance: float = 1e-6

    def to_dict(self) -> dict[str, Any]:
        """The trial as plain JSON values."""
        return {
            "sweep": self.sweep,
            "problem": self.problem,
            "params": dict(self.params),
            "cell": dict(self.cell),
            "method": self.method,
            "label": self.label,
            "options": dict(self.options),
            "seed": self.seed,
            "draw": self.draw,
            "truth": self.truth,
            "tolerance": self.tolerance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        """Inverse of :meth:`to_dict`."""
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})

    @functools.cached_property
    def key(self) -> str:
        """SHA-256 (hex, 32 characters) of the trial's canonical JSON."""
        return trial_key(self.to_dict())

    def cell_id(self) -> str:
        """Canonical JSON of (problem, parameters): the identity of the ground truth's grid cell."""
        return canonical_json({"problem": self.problem, "params": dict(self.params)})


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """The outcome of one trial, as stored (one row of the store).

    Attributes:
        key: the trial's key.
        trial: the trial as JSON values (:meth:`Trial.to_dict`).
        metrics: what the method measured plus ``success`` (status ok and error < tolerance).
        status: ``"ok"`` or ``"failed"``.
        error: the failure's one-line message (None when ok).
        duration: wall-clock seconds of the trial.
        host: the machine that ran it.
        version: flatminima's version on that machine.
        created: when it finished (UTC, ISO 8601).
    """

    key: str
    trial: Mapping[str, Any]
    metrics: Mapping[str, Any]
    status: str
    error: str | None
    duration: float
    host: str
    version: str
    created: str

    @property
    def sweep(self) -> str:
        """The sweep's name."""
        return str(self.trial["sweep"])

    @property
    def success(self) -> bool:
        """Whether the trial recovered the ground truth."""
        return bool(self.metrics.get("success", False))


def make_problem(name: str, params: Mapping[str, Any]) -> Problem:
    """Build the problem ``name`` from JSON parameters (lists become tuples)."""
    if name not in PROBLEMS:
        raise ConfigurationError(f"unknown problem {name!r}; valid: {', '.join(sorted(PROBLEMS))}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return PROBLEMS[name](**kwargs)


def _with_truth(problem: Problem, truth_generator: torch.Generator, generator: torch.Generator) -> Instance:
    """Draw measurements from ``generator`` of the ground truth drawn from ``truth_generator``.

    The truth comes from a one-measurement copy of the problem (every model draws its ground truth
    before its operator, and the truth stream is never used for measurements), so it is the same for
    every draw of a cell; observations are recomputed as A(M) + the draw's own noise.
    """
    fields = {f.name for f in dataclasses.fields(problem)}  # type: ignore[arg-type]
    small = dataclasses.replace(problem, num_measurements=1) if "num_measurements" in fields else problem  # type: ignore[type-var]
    truth = small.sample(generator=truth_generator)
    draw = problem.sample(generator=generator)
    M = truth.ground_truth
    if M is None:  # a sampled model always draws its truth; guard the optional field
        raise ConfigurationError(f"problem {problem.name!r} sampled an instance without a ground truth")
    observations = draw.operator.apply(M)
    if "noise" in draw.extras:
        observations = observations + draw.extras["noise"]
    extras = {k: v for k, v in truth.extras.items() if k != "noise"}
    if "noise" in draw.extras:
        extras["noise"] = draw.extras["noise"]
    return dataclasses.replace(draw, ground_truth=M, observations=observations, extras=extras)


def trial_instance(trial: Trial) -> tuple[Instance, dict[str, torch.Generator]]:
    """The instance of a trial and its ``init`` and ``solver`` generators (deterministic in the trial)."""
    problem = make_problem(trial.problem, trial.params)
    cell = trial.cell_id()
    streams = child_generators(
        derive_seed(trial.seed, f"draw:{trial.draw}:{cell}"), "instance", "init", "solver"
    )
    if trial.truth == "cell":
        truth_generator = make_generator(derive_seed(trial.seed, f"truth:{cell}"))
        instance = _with_truth(problem, truth_generator, streams["instance"])
    elif trial.truth == "draw":
        instance = problem.sample(generator=streams["instance"])
    else:
        raise ConfigurationError(f"truth: must be one of {', '.join(TRUTH_MODES)}, got {trial.truth!r}")
    return instance, {"init": streams["init"], "solver": streams["solver"]}


def _plain(value: Any) -> Any:
    """Metrics as JSON values (tensors and numpy scalars become Python numbers)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    return value


def _one_line(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def run_trial(trial: Trial) -> TrialRecord:
    """Run one trial and return its record; never raises for a failing method.

    The method's exception (or :class:`TrialFailed` for a missing certificate or a divergence) becomes
    ``status = "failed"`` with its one-line message; ``metrics["success"]`` is True iff the status is ok
    and ``metrics["error"] < trial.tolerance``.

    Args:
        trial: the trial.

    Returns:
        Its :class:`TrialRecord`.

    Example:
        >>> t = Trial("demo", "matrix_sensing", {"shape": [4, 4], "rank": 1, "num_measurements": 20},
        ...           {}, "least_norm", "least_norm", {}, seed=0, draw=0)
        >>> run_trial(t).status
        'ok'
    """
    from flatminima import __version__

    start = time.perf_counter()
    metrics: dict[str, Any]
    try:
        method = resolve_method(trial.method)
        instance, generators = trial_instance(trial)
        context = MethodContext(generators=generators, tolerance=trial.tolerance, label=trial.label)
        metrics = dict(method.function(instance, trial.options, context))
        status, error = "ok", None
    except TrialFailed as failure:
        metrics, status, error = dict(failure.metrics), "failed", _one_line(str(failure))
    except Exception as failure:  # a crashing trial is recorded; the sweep goes on
        metrics, status = {}, "failed"
        error = _one_line(f"{type(failure).__name__}: {failure}")
    metrics = _plain(metrics)
    value = metrics.get("error")
    finite_error = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    metrics["success"] = bool(status == "ok" and finite_error and float(value) < trial.tolerance)  # type: ignore[arg-type]
    return TrialRecord(
        key=trial.key,
        trial=trial.to_dict(),
        metrics=metrics,
        status=status,
        error=error,
        duration=time.perf_counter() - start,
        host=socket.gethostname(),
        version=__version__,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
    )
