"""What ``progress=`` means on ``Lake.add``, ``push``, ``pull``, ``sync``, ``write_dataset``,
``lakelet.run`` and ``Stage.map``.

A ``Progress`` object is told the bytes (the stages, the items, for a run or a map);
``False`` shows nothing; ``True`` draws a bar on stderr; ``None`` (the default) draws one
only in an interactive session — stderr is a terminal, or the code runs in a Jupyter kernel —
so scripts, pipes and CI logs stay quiet — and never inside a stage's body: a bar per write
would fight with the run's own bar (or ``lakelet run``'s line). The bar appears once the work
has lasted half a second, and is gone when it ends.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lakelet.core._config import progress_delay
from lakelet.core._progress import SILENT, Progress
from lakelet.lake._pending import CURRENT

if TYPE_CHECKING:  # rich is imported when a bar is first drawn
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

__all__ = ["ProgressOption", "chosen", "interactive"]

ProgressOption = Progress | bool | None


def interactive() -> bool:
    """A person is watching: stderr is a terminal, or this is a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


@contextlib.contextmanager
def chosen(progress: ProgressOption, description: str, unit: str = "bytes") -> Iterator[Progress]:
    """The Progress to report to for ``progress`` (see the module), closed at the end; a bar
    drawn counts ``unit``: 'bytes', or 'items' (stages, calls)."""
    if progress is None:
        progress = interactive() and CURRENT.get() is None
    if progress is False:
        yield SILENT
        return
    if progress is True:
        bar = _Bar(description, unit)
        try:
            yield bar
        finally:
            bar.close()
        return
    yield progress


class _Bar:
    """A rich bar of bytes (or items); ``phase`` starts the count again for a new step (the
    upload)."""

    def __init__(self, description: str, unit: str = "bytes") -> None:
        self._description = description
        self._unit = unit
        self._started = time.monotonic()
        self._delay = progress_delay(0.5)
        self._total = self._done = 0
        self._bar: tuple[RichProgress, TaskID] | None = None

    def phase(self, description: str) -> None:
        self._total = self._done = 0
        self._description = f"{description} {self._description.split(' ', 1)[-1]}"
        self._update(description=self._description, completed=0, total=None)

    def add_total(self, nbytes: int, /) -> None:
        self._total += nbytes
        self._update(total=self._total)

    def advance(self, nbytes: int, /) -> None:
        self._done += nbytes
        if self._bar is None and time.monotonic() - self._started >= self._delay:
            self._draw()
        self._update(completed=self._done)

    def _update(self, **fields: Any) -> None:
        if self._bar is not None:
            bar, task = self._bar
            bar.update(task, **fields)

    def _draw(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        counts: list[ProgressColumn] = (
            [DownloadColumn(), TransferSpeedColumn()]
            if self._unit == "bytes"
            else [MofNCompleteColumn(), TimeElapsedColumn()]
        )
        bar = Progress(
            TextColumn("{task.description}", markup=False),  # a name is anyone's text
            BarColumn(),
            *counts,
            console=Console(stderr=True),
            transient=True,
        )
        bar.start()
        self._bar = bar, bar.add_task(self._description, total=self._total or None)

    def close(self) -> None:
        if self._bar is not None:
            self._bar[0].stop()
            self._bar = None
