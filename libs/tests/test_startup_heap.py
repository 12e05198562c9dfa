"""A serving process freezes the objects alive after start-up out of the cyclic collector
(no full collection walks them again), after collecting start-up's garbage, and spaces out
its young collections."""

from __future__ import annotations

import asyncio
import gc
import weakref

import uvicorn
from litestar import Litestar

from mediaflow_libs.serving import YOUNG_COLLECTION_THRESHOLD, FreezingServer


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


async def test_start_up_freezes_the_live_heap_after_collecting_its_garbage() -> None:
    gc.unfreeze()
    default_thresholds = gc.get_threshold()
    garbage = _Node()
    gone = weakref.ref(garbage)
    del garbage
    kept = _Node()
    server = FreezingServer(uvicorn.Config(Litestar(logging_config=None), port=0, log_config=None))
    assert gc.get_freeze_count() == 0
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        assert gc.get_freeze_count() > 0
        assert gone() is None, "garbage from before start-up was frozen instead of freed"
        # Frozen objects sit in the permanent generation, which no collection walks.
        assert all(o is not kept for o in gc.get_objects()), "a live object was left to walk"
        # Young collections are spaced out; the older generations keep their schedule.
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *default_thresholds[1:])
    finally:
        server.should_exit = True
        await serving
        gc.unfreeze()
        gc.set_threshold(*default_thresholds)
