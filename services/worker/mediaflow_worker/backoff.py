"""When to try a job again: exponential backoff with jitter, fitted to the broker's delay
queues, never sooner than a source's ``Retry-After``."""

from __future__ import annotations

import bisect
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from mediaflow_libs.amqp import RETRY_DELAYS_MS


def backoff_seconds(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): ``base`` doubling per
    attempt up to ``cap``, of which a random half is jitter ("equal jitter"), so that jobs
    failing together do not all come back together."""
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    jitter: float = rng.uniform(0, ceiling / 2)
    return ceiling / 2 + jitter


def delay_queue_ms(wanted: float, at_least: float, rng: random.Random) -> int:
    """The delay queue (its TTL in ms) for a wait of ``wanted`` seconds, never shorter than
    ``at_least`` seconds. Between two queues the choice is random, weighted so the expected
    wait is ``wanted``: the jitter survives the queues' coarse steps."""
    floor_ms = _queue_at_or_above(at_least * 1000)
    wanted_ms = wanted * 1000
    above = _queue_at_or_above(wanted_ms)
    index = RETRY_DELAYS_MS.index(above)
    if index > 0 and above > wanted_ms:
        below = RETRY_DELAYS_MS[index - 1]
        if rng.random() >= (wanted_ms - below) / (above - below):
            above = below
    return max(above, floor_ms)


def _queue_at_or_above(ms: float) -> int:
    index = bisect.bisect_left(RETRY_DELAYS_MS, ms)
    return RETRY_DELAYS_MS[min(index, len(RETRY_DELAYS_MS) - 1)]


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit alone takes "²", which float() refuses
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
