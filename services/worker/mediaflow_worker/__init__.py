"""The mediaflow worker: ``main()`` is the ``mediaflow-worker`` command."""

from __future__ import annotations


def main() -> None:
    from mediaflow_worker.main import main as run

    run()
