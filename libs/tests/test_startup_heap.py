"""The objects alive after start-up are frozen out of the cyclic collector (no full
collection walks them again), and only after start-up's garbage was collected."""

from __future__ import annotations

import gc
import weakref

from litestar import Litestar, get
from litestar.testing import TestClient

from mediaflow_libs.web import around_routing


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def test_start_up_freezes_the_live_heap_after_collecting_its_garbage() -> None:
    @get("/ping")
    async def ping() -> str:
        return "pong"

    gc.unfreeze()
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = _Node()
    app = around_routing(Litestar(route_handlers=[ping], logging_config=None))
    assert gc.get_freeze_count() == 0
    with TestClient(app) as client:
        assert client.get("/ping").text == "pong"
        assert gc.get_freeze_count() > 0
        assert gone() is None, "garbage from before start-up was frozen instead of freed"
        # Frozen objects sit in the permanent generation, which no collection walks.
        assert all(o is not kept for o in gc.get_objects()), "a live object was left to walk"
    gc.unfreeze()
