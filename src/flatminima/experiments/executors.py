"""Where trials run: in the driver process, on a local Dask cluster, or on an existing Dask scheduler.

An executor maps a function over items and yields ``(item, result_or_exception)`` pairs **as they
complete** (``distributed.as_completed``), so the driver can store each record at once. Executors never
touch the store: only the driver writes.

* :class:`InProcessExecutor`: one by one in this process (debugging, tests, tiny sweeps).
* :class:`DaskExecutor` with ``workers=N``: a ``distributed.LocalCluster`` of N worker *processes* with one
  thread each (torch, OpenMP and MKL limited to one thread per worker, so N workers use N cores). A
  worker process that dies is restarted by its nanny and its trials are rescheduled; a trial that kills
  workers repeatedly comes back as ``KilledWorker`` and is stored as failed.
* :class:`DaskExecutor` with ``scheduler="tcp://host:port"``: an existing cluster (``dask scheduler`` +
  ``dask worker``, or dask-jobqueue on SLURM); flatminima must be installed on its workers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from flatminima.errors import ConfigurationError

T = TypeVar("T")

_SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}


class Executor(Protocol):
    """Runs a function over items, yielding (item, result or exception) as each completes."""

    def map_unordered(self, function: Callable[[T], Any], items: Iterable[T]) -> Iterator[tuple[T, Any]]:
        """Yield ``(item, function(item))`` (or the exception it raised) in completion order."""
        ...

    def close(self) -> None:
        """Release the executor's resources."""
        ...


class InProcessExecutor:
    """Run every item in this process, in order.

    Args:
        num_threads: torch threads while a trial runs (default 1, as on the Dask workers: small dense
            problems gain nothing from more, and on a busy machine they can be many times slower);
            the previous setting is restored after each trial. None leaves torch's setting alone.
    """

    description = "in-process"

    def __init__(self, num_threads: int | None = 1) -> None:
        self.num_threads = num_threads

    def map_unordered(self, function: Callable[[T], Any], items: Iterable[T]) -> Iterator[tuple[T, Any]]:
        """Yield ``(item, function(item))``; an Exception is yielded, KeyboardInterrupt propagates."""
        import torch

        for item in items:
            previous = torch.get_num_threads()
            if self.num_threads is not None:
                torch.set_num_threads(self.num_threads)
            try:
                result: Any = function(item)
            except Exception as error:
                result = error
            finally:
                torch.set_num_threads(previous)
            yield item, result

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> InProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def single_threaded(function: Callable[[T], Any], item: T) -> Any:
    """Run ``function(item)`` with torch limited to one thread (the worker-side wrapper)."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    return function(item)


class DaskExecutor:
    """Run items on a Dask cluster: a new local one (``workers``) or an existing one (``scheduler``).

    Args:
        workers: number of local worker processes (one thread each); default: the CPU count.
        scheduler: address of an existing scheduler, e.g. ``"tcp://127.0.0.1:8786"``.
        connect_timeout: seconds to wait for the scheduler.

    Raises:
        ConfigurationError: both or an invalid number of workers, dask.distributed missing, or the
            scheduler unreachable.
    """

    def __init__(
        self, workers: int | None = None, scheduler: str | None = None, *, connect_timeout: float = 20.0
    ) -> None:
        if workers is not None and scheduler is not None:
            raise ConfigurationError("give either --workers (a local cluster) or --scheduler, not both")
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ConfigurationError(f"workers: must be a positive integer, got {workers!r}")
        try:
            import distributed
        except ImportError:  # pragma: no cover - a dependency
            raise ConfigurationError(
                "dask.distributed is not installed; pip install 'dask[distributed]'"
            ) from None
        self.cluster: Any = None
        if scheduler is not None:
            try:
                self.client = distributed.Client(scheduler, timeout=connect_timeout, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as error:
                raise ConfigurationError(
                    f"cannot connect to the Dask scheduler {scheduler!r}: {error}"
                ) from None
            self.description = f"Dask scheduler {scheduler}"
        else:
            count = workers if workers is not None else max(1, os.cpu_count() or 1)
            self.cluster = distributed.LocalCluster(
                n_workers=count,
                threads_per_worker=1,
                processes=True,
                dashboard_address="127.0.0.1:0",  # a free local port (None still binds 8787)
                silence_logs=logging.ERROR,
                env=_SINGLE_THREAD_ENV,
            )
            self.client = distributed.Client(self.cluster, set_as_default=False)
            self.description = f"local Dask cluster, {count} worker process{'es' if count > 1 else ''}"

    def worker_pids(self) -> dict[str, int]:
        """Process ids of the workers (address -> pid)."""
        return dict(self.client.run(os.getpid))

    def map_unordered(self, function: Callable[[T], Any], items: Iterable[T]) -> Iterator[tuple[T, Any]]:
        """Submit every item, then yield ``(item, result or exception)`` as futures complete."""
        import distributed

        futures = {}
        for item in items:
            key = f"trial-{getattr(item, 'key', id(item))}"
            futures[self.client.submit(single_threaded, function, item, key=key, pure=False)] = item
        try:
            for future in distributed.as_completed(list(futures), loop=self.client.loop):
                item = futures.pop(future)
                try:
                    result: Any = future.result()
                except Exception as error:  # KilledWorker, a lost scheduler, ...
                    result = error
                future.release()
                yield item, result
        finally:
            for future in futures:
                future.cancel()

    def close(self) -> None:
        """Close the client and, for a local cluster, shut the cluster down."""
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_executor(
    *, workers: int | None = None, scheduler: str | None = None, in_process: bool = False
) -> Any:
    """The executor the CLI options ask for (a local Dask cluster by default)."""
    if in_process:
        if scheduler is not None or workers is not None:
            raise ConfigurationError("give either --in-process or --workers / --scheduler, not both")
        return InProcessExecutor()
    return DaskExecutor(workers=workers, scheduler=scheduler)
