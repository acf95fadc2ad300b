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

import contextlib
import logging
import os
import signal
import threading
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


class _QuietAfterInterrupt(logging.Filter):
    """Once Ctrl-C reached the driver, drop the log records of the client's event loop.

    An interrupt that lands while the driver waits on the client makes ``distributed`` cancel the wait
    from its event-loop thread, which can log a harmless traceback (``tornado.application``) while the
    cluster shuts down; the CLI prints one line instead. Installed from the main thread only: a SIGINT
    handler that flags the interrupt, then raises ``KeyboardInterrupt`` as Python's own does.
    """

    LOGGERS = ("tornado.application", "tornado.general", "asyncio")

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = threading.Event()
        self.previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._on_interrupt)
        # a logger's filters see only its own records; distributed's children log through its handlers
        self.targets: list[logging.Filterer] = [logging.getLogger(name) for name in self.LOGGERS]
        self.targets += logging.getLogger("distributed").handlers
        for target in self.targets:
            target.addFilter(self)

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        if self.previous == signal.SIG_IGN:
            return
        self.interrupted.set()
        if callable(self.previous):
            self.previous(signum, frame)
        raise KeyboardInterrupt

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.interrupted.is_set()

    def remove(self) -> None:
        """Restore the SIGINT handler (main thread) and detach from the loggers."""
        if self.previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
        for target in self.targets:
            target.removeFilter(self)


@contextlib.contextmanager
def _workers_ignore_interrupts() -> Iterator[None]:
    """Start worker processes with SIGINT ignored (the disposition survives their exec).

    Ctrl-C in a terminal reaches the whole process group: the driver stops the sweep and shuts the cluster
    down itself, so the workers must neither print ``KeyboardInterrupt`` tracebacks nor turn the trials
    they were running into failures that would be stored. A nanny restarts a worker that died, and it
    inherits the same disposition. Outside the main thread signal handlers cannot change: a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
        oversubscribe: allow more than WORKERS_PER_CPU local workers per CPU.

    Raises:
        ConfigurationError: both, an invalid or excessive number of workers, a malformed scheduler
            address, dask.distributed missing, or the scheduler unreachable.
    """

    def __init__(
        self,
        workers: int | None = None,
        scheduler: str | None = None,
        *,
        connect_timeout: float = 20.0,
        oversubscribe: bool = False,
    ) -> None:
        if workers is not None and scheduler is not None:
            raise ConfigurationError("give either --workers (a local cluster) or --scheduler, not both")
        check_workers(workers, oversubscribe=oversubscribe)
        if scheduler is not None:
            check_scheduler_address(scheduler)
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
            with _workers_ignore_interrupts():
                self.cluster = distributed.LocalCluster(
                    n_workers=count,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address="127.0.0.1:0",  # a free local port (None still binds 8787)
                    silence_logs=logging.CRITICAL,  # failures come back as results, with reasons
                    env=_SINGLE_THREAD_ENV,
                )
            self.client = distributed.Client(self.cluster, set_as_default=False)
            self.description = f"local Dask cluster, {count} worker process{'es' if count > 1 else ''}"
        self._quiet = _QuietAfterInterrupt()

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
        try:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
        finally:
            self._quiet.remove()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: local worker processes per CPU at most, unless the caller asks to oversubscribe.
WORKERS_PER_CPU = 4
#: the network transports of a Dask scheduler address (``SCHEME://HOST:PORT``; a bare ``HOST:PORT`` is
#: tcp); ``inproc://`` (a cluster in this process) is accepted as well.
SCHEDULER_SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")


def check_workers(workers: int | None, *, oversubscribe: bool = False) -> None:
    """Refuse a worker count that is not a positive integer, or above WORKERS_PER_CPU x the CPU count.

    Each local worker is a process with its own interpreter and torch (a few hundred MB): ten thousand
    of them do not start, they hang the machine. ``oversubscribe=True`` (``--oversubscribe``) lifts the cap.

    Raises:
        ConfigurationError: naming the count and the limit.
    """
    if workers is None:
        return
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"--workers: must be a positive integer, got {workers!r}")
    cpus = max(1, os.cpu_count() or 1)
    limit = WORKERS_PER_CPU * cpus
    if workers > limit and not oversubscribe:
        raise ConfigurationError(
            f"--workers {workers}: more than the limit {limit} ({WORKERS_PER_CPU} per CPU, {cpus} CPUs "
            "here); pass --oversubscribe to start them anyway"
        )


def check_scheduler_address(address: str) -> str:
    """Check a Dask scheduler address, ``SCHEME://HOST:PORT`` (or ``HOST:PORT``), before connecting.

    A malformed address would otherwise wait for the connect timeout and end in a traceback from the
    half-built client; an ``http://`` address is the dashboard, not the scheduler.

    Raises:
        ConfigurationError: naming the address and the expected form.
    """
    form = "SCHEME://HOST:PORT with SCHEME one of " + ", ".join(SCHEDULER_SCHEMES) + " (e.g. tcp://host:8786)"
    if not isinstance(address, str) or not address.strip():
        raise ConfigurationError(f"--scheduler {address!r}: must be {form}")
    scheme, separator, rest = address.partition("://")
    if not separator:
        scheme, rest = "tcp", address
    if scheme == "inproc" and rest:  # a cluster in this process (inproc://HOST/PID/N): no port
        return address
    if scheme.lower() in ("http", "https"):
        raise ConfigurationError(
            f"--scheduler {address!r}: an HTTP address is the dashboard, not the scheduler; give the "
            "scheduler's tcp://HOST:PORT (port 8786 by default)"
        )
    host, colon, port = rest.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [IPv6]
    valid = (
        scheme in SCHEDULER_SCHEMES
        and bool(colon and host)
        and not any(c in host for c in "/?#@ ")
        and port.isdigit()
        and 0 < int(port) < 65536
    )
    if not valid:
        raise ConfigurationError(f"--scheduler {address!r}: must be {form}")
    return address


def make_executor(
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    in_process: bool = False,
    oversubscribe: bool = False,
) -> Any:
    """The executor the CLI options ask for (a local Dask cluster by default)."""
    if in_process:
        if scheduler is not None or workers is not None:
            raise ConfigurationError("give either --in-process or --workers / --scheduler, not both")
        return InProcessExecutor()
    return DaskExecutor(workers=workers, scheduler=scheduler, oversubscribe=oversubscribe)
