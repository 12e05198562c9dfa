"""Keep the worker's resident memory flat (``bench/worker_rss.py``): tell glibc's allocator
to give freed part buffers back to the system instead of keeping them for reuse.

- ``M_MMAP_THRESHOLD`` fixed at 2 MiB: every part buffer (8 MiB and up) gets pages of its
  own that go back to the system when freed. Left alone, glibc raises the threshold to the
  size of the largest block freed so far, after which part buffers come from the heap and
  freed ones stay resident, fragmented. Network chunks (256 KiB) stay below it and reuse
  the heap: given pages of their own, each was mapped, faulted in and unmapped again, which
  cost the worker half its CPU per GiB streamed (``bench/worker_throughput.py``).
- ``M_TRIM_THRESHOLD`` of 8 MiB: the heap top those chunks come and go at is not handed
  back and taken again (``brk``) with every few chunks.
- ``M_ARENA_MAX`` of 2: each thread (the resolver's and executor's) would otherwise get an
  arena of its own, each keeping what it once held.
- After start-up, ``malloc_trim`` returns what importing and connecting allocated and
  dropped.

Elsewhere than glibc (musl, macOS) these are skipped: they only tune, nothing depends on them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

import structlog

log = structlog.get_logger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_MMAP_THRESHOLD_BYTES = 2 * 1024 * 1024
_TRIM_THRESHOLD_BYTES = 8 * 1024 * 1024
_ARENAS = 2


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_allocator() -> bool:
    """Set the allocator's thresholds; call first thing in ``main``. False when skipped."""
    libc = _libc()
    if libc is None:
        return False
    for option, value in (
        (_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES),
        (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES),
        (_M_ARENA_MAX, _ARENAS),
    ):
        if libc.mallopt(option, value) != 1:
            log.warning("memory.mallopt_refused", option=option, value=value)
    return True


def release_free_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the system."""
    gc.collect()
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
