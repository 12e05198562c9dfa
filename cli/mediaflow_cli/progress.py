"""One progress display for a task being stored and for a file being downloaded: a bar that
redraws in place on a terminal, a few plain lines when stderr is a file or a pipe."""

from __future__ import annotations

import time
from types import TracebackType

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from mediaflow_cli.command import console, say

# Without a terminal: a line each 10 %, and when the size is unknown at most one each 10 s.
LINE_STEP_PERCENT = 10
LINE_EVERY_SECONDS = 10.0


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Bar:
    def __init__(self, label: str) -> None:
        self.label = label
        self.live = console.is_terminal
        self._progress: Progress | None = None
        self._bar: TaskID | None = None
        self._last: tuple[str, int, float] | None = None  # status, step, time of the last line

    def __enter__(self) -> Bar:
        if self.live:
            self._progress = Progress(
                TextColumn("{task.description}"),
                TextColumn("[bold]{task.fields[status]}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self._progress.start()
            self._bar = self._progress.add_task(self.label, total=None, status="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, status: str, done: int, total: int | None) -> None:
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, completed=done, total=total, status=status)
            return
        step = done * 100 // total // LINE_STEP_PERCENT if total else -1
        now = time.monotonic()
        if self._last is not None:
            last_status, last_step, last_time = self._last
            if status == last_status and (
                step == last_step if total else now - last_time < LINE_EVERY_SECONDS
            ):
                return
        self._last = (status, step, now)
        amount = f"{done * 100 // total}% of {_size(total)}" if total else _size(done)
        say(" ".join(part for part in (self.label, status, amount) if part))
