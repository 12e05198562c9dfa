"""The mediaflow worker: ``main()`` is the ``mediaflow-worker`` command."""

from __future__ import annotations

import sys


def main() -> None:
    # structlog renders exceptions with rich whenever rich can be imported (it comes with
    # Litestar's CLI); the worker logs JSON and does without, which keeps rich's modules
    # (~3 MiB) out of its memory (bench/worker_rss.py). Done before anything imports
    # structlog, and only in the worker's own process: tests import the package freely.
    sys.modules.setdefault("rich", None)  # type: ignore[assignment]
    from mediaflow_worker.main import main as run

    run()
