"""A circuit breaker: consecutive faults of a dependency open it for a while."""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Spares auth, and the requests that would wait on it, calls that are bound to fail.

    Closed, it lets every call through and counts consecutive faults; ``threshold`` of them
    open it. Open, it refuses calls until ``reset_seconds`` have passed, then lets one trial
    call through (half-open) and refuses the others meanwhile: a success closes it, a fault
    opens it again for another ``reset_seconds``. A trial that never reports back is replaced
    by another one after ``reset_seconds``. Only faults of auth itself are recorded as such
    (see :meth:`SessionClient._ask_auth`); any answer is a success.
    """

    def __init__(
        self, threshold: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._faults = 0
        self._opened_at: float | None = None  # or the start of the latest trial

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def allow(self) -> bool:
        if self._opened_at is None:
            return True
        now = self._clock()
        if now - self._opened_at < self.reset_seconds:
            return False
        self._opened_at = now  # this call is the trial; the next one waits a period
        return True

    def record_success(self) -> None:
        self._faults, self._opened_at = 0, None

    def record_fault(self) -> None:
        self._faults += 1
        if self._faults >= self.threshold:
            self._opened_at = self._clock()
