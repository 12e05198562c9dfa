"""Fixtures of the realtime tests: a slow media origin (jobs that last a few seconds)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.realtime.support import SlowOrigin

# 1 MiB/s: a 3 MiB sample takes about 3 s, with a progress event every 0.5 s.
BYTES_PER_SECOND = 1024 * 1024


@pytest.fixture(scope="session")
def slow_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowOrigin]:
    with SlowOrigin(tmp_path_factory.mktemp("slow-origin"), BYTES_PER_SECOND) as origin:
        yield origin
