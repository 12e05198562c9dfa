from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from mediaflow_libs.amqp import RETRY_DELAYS_MS
from mediaflow_worker.backoff import backoff_seconds, delay_queue_ms, parse_retry_after
from mediaflow_worker.settings import WorkerSettings


def test_backoff_doubles_per_attempt_with_jitter_in_its_upper_half() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16)]:
        waits = [backoff_seconds(attempt, 2, 600, rng) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert len({round(w, 3) for w in waits}) > 100  # jittered, not one value


def test_backoff_stops_growing_at_the_cap() -> None:
    rng = random.Random(7)
    assert all(30 <= backoff_seconds(20, 2, 60, rng) <= 60 for _ in range(100))


def test_a_delay_maps_to_a_delay_queue_with_the_wanted_wait_on_average() -> None:
    rng = random.Random(11)
    chosen = [delay_queue_ms(3.5, 0, rng) for _ in range(4000)]
    assert set(chosen) == {2_000, 5_000}  # the queues on either side of 3.5 s
    assert sum(chosen) / len(chosen) == pytest.approx(3_500, rel=0.05)


def test_retry_after_is_never_cut_short() -> None:
    rng = random.Random(3)
    for _ in range(500):
        assert delay_queue_ms(0.3, 1.2, rng) >= 1_200
        assert delay_queue_ms(0.3, 1.2, rng) == 2_000  # the first queue at or above 1.2 s


def test_delays_beyond_the_longest_queue_use_the_longest() -> None:
    assert delay_queue_ms(99_999, 0, random.Random(1)) == RETRY_DELAYS_MS[-1]


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 3 ") == 3
    stamp = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(stamp, now=now) == 90
    past = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert parse_retry_after(past, now=now) == 0
    for unusable in (None, "", "soon", "-5", "1.5", "\u00b2", "\u0663"):
        assert parse_retry_after(unusable, now=now) is None


def test_the_default_retries_wait_what_the_readme_says() -> None:
    fields = WorkerSettings.model_fields
    base = fields["retry_base_delay_seconds"].default
    cap = fields["retry_max_delay_seconds"].default
    rng = random.Random(5)
    # The delay queues each retry (after attempt 1, 2, 3, 4) may land in.
    expected = {
        1: {1_000, 2_000},
        2: {2_000, 5_000},
        3: {2_000, 5_000, 10_000},
        4: {5_000, 10_000, 30_000},
    }
    assert len(expected) == fields["retry_max_attempts"].default - 1
    for attempt, queues in expected.items():
        waits = {
            delay_queue_ms(backoff_seconds(attempt, base, cap, rng), 0, rng) for _ in range(5000)
        }
        assert waits == queues, attempt
