"""A wall-clock budget shared by a solve and every stage it calls (loops, polish, setup steps).

Each solver entry turns ``time_limit`` into one :class:`Deadline` anchored at the start of the solve and
passes it down, so that the ADMM loop, the interior-point method, the polish (Gauss-Newton, conjugate
gradients, Newton-KKT), the factor search and its L-BFGS all stop at the same instant. Loops test
:meth:`Deadline.expired` once per iteration; stages whose single steps are expensive (a dense Newton-KKT
solve) also test :meth:`Deadline.allows` with the measured cost of their previous step, so a solve
returns within about one iteration's cost of the limit.
"""

from __future__ import annotations

import math
import time


class Deadline:
    """The instant ``start + limit`` (``time.perf_counter`` clock); ``limit=None`` never expires.

    Example:
        >>> Deadline(None).expired(), Deadline(None).remaining()
        (False, inf)
        >>> Deadline(1e-9, start=0.0).expired()
        True
    """

    __slots__ = ("end", "limit", "start")

    def __init__(self, limit: float | None, *, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else start
        self.limit = limit
        self.end = math.inf if limit is None else self.start + limit

    @property
    def bounded(self) -> bool:
        """True when there is a limit."""
        return self.limit is not None

    def elapsed(self) -> float:
        """Seconds since ``start``."""
        return time.perf_counter() - self.start

    def remaining(self) -> float:
        """Seconds left (inf without a limit; negative once expired)."""
        return self.end - time.perf_counter()

    def expired(self) -> bool:
        """True once the limit has passed."""
        return time.perf_counter() > self.end

    def allows(self, cost: float) -> bool:
        """True if a step expected to take ``cost`` seconds would end before the limit."""
        return time.perf_counter() + cost <= self.end

    def __repr__(self) -> str:
        return f"Deadline(limit={self.limit}, remaining={self.remaining():.3g})"


#: a deadline that never expires (the default of internal stages called without one).
NO_DEADLINE = Deadline(None, start=0.0)
