"""What ``progress=`` means on ``Lake.add``, ``push``, ``pull``, ``sync``, ``write_dataset``,
``lakelet.run`` and ``Stage.map``.

A ``Progress`` object is told the bytes (the stages, the items, for a run or a map);
``False`` shows nothing; ``True`` draws a bar on stderr; ``None`` (the default) draws one
only in an interactive session — stderr is a terminal, or the code runs in a Jupyter kernel —
so scripts, pipes and CI logs stay quiet — and never inside a stage's body: a bar per write
would fight with the run's own bar (or ``lakelet run``'s line). The bar appears once the work
has lasted half a second. In a terminal it is rich's bar, gone when the work ends; in a
Jupyter kernel it is an HTML ``<progress>`` in the cell's output, updated in place (no
ipywidgets needed: rich's bar asks for them and, without them, prints a warning instead), and
left showing what was done.
"""

from __future__ import annotations

import contextlib
import html
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from lakelet.core._config import progress_delay
from lakelet.core._display import human_size
from lakelet.core._progress import SILENT, Progress
from lakelet.lake._pending import CURRENT

if TYPE_CHECKING:  # rich is imported when a bar is first drawn
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

__all__ = ["ProgressOption", "chosen", "interactive"]

ProgressOption = Progress | bool | None


def interactive() -> bool:
    """A person is watching: stderr is a terminal, or this is a Jupyter kernel."""
    if _in_kernel():
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


def _in_kernel() -> bool:
    """This code runs in a Jupyter kernel (not merely a process that imported ipykernel)."""
    if "ipykernel" not in sys.modules:
        return False
    from IPython import get_ipython

    return type(get_ipython()).__name__ == "ZMQInteractiveShell"


class _Bar:
    """A bar of bytes (or items); ``phase`` starts the count again for a new step (the
    upload). Drawn once the work has lasted the delay: in a cell's output in a Jupyter
    kernel, else by rich on stderr."""

    def __init__(self, description: str, unit: str = "bytes") -> None:
        self._description = description
        self._unit = unit
        self._started = time.monotonic()
        self._delay = progress_delay(0.5)
        self._total = self._done = 0
        self._drawn: _RichBar | _CellBar | None = None

    def phase(self, description: str) -> None:
        self._total = self._done = 0
        self._description = f"{description} {self._description.split(' ', 1)[-1]}"
        self._show()

    def add_total(self, nbytes: int, /) -> None:
        self._total += nbytes
        self._show()

    def advance(self, nbytes: int, /) -> None:
        self._done += nbytes
        if self._drawn is None and time.monotonic() - self._started >= self._delay:
            self._drawn = _CellBar(self._unit) if _in_kernel() else _RichBar(self._unit)
        self._show()

    def _show(self) -> None:
        if self._drawn is not None:
            self._drawn.show(self._description, self._done, self._total or None)

    def close(self) -> None:
        if self._drawn is not None:
            self._drawn.close(self._description, self._done, self._total or None)
            self._drawn = None


class _RichBar:
    """rich's bar on stderr, gone when the work ends."""

    def __init__(self, unit: str) -> None:
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
            if unit == "bytes"
            else [MofNCompleteColumn(), TimeElapsedColumn()]
        )
        self._bar: RichProgress = Progress(
            TextColumn("{task.description}", markup=False),  # a name is anyone's text
            BarColumn(),
            *counts,
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.start()
        self._task: TaskID | None = None

    def show(self, description: str, done: int, total: int | None) -> None:
        if self._task is None:
            self._task = self._bar.add_task(description, total=total)
        self._bar.update(self._task, description=description, completed=done, total=total)

    def close(self, description: str, done: int, total: int | None) -> None:
        self._bar.stop()


class _CellBar:
    """An HTML ``<progress>`` in the running cell's output, replaced in place at most every
    tenth of a second (each update is a message to the notebook), and left at its last
    count when the work ends."""

    _EVERY = 0.1

    def __init__(self, unit: str) -> None:
        from IPython import display as ipython

        show: Any = ipython.display  # (IPython has no types)

        self._unit = unit
        self._started = time.monotonic()
        self._shown = 0.0
        handle = show({"text/plain": "", "text/html": ""}, raw=True, display_id=True)
        self._replace: Callable[[dict[str, str]], None] = lambda shown: handle.update(shown, raw=True)

    def show(self, description: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._shown >= self._EVERY:
            self._shown = now
            self._replace(self.shown(description, done, total))

    def close(self, description: str, done: int, total: int | None) -> None:
        self._replace(self.shown(description, done, total, ended=True))

    def shown(self, description: str, done: int, total: int | None, ended: bool = False) -> dict[str, str]:
        """The bar as HTML and as text (what a notebook without HTML shows)."""
        count = human_size if self._unit == "bytes" else "{:,}".format
        counted = f"{count(done)} of {count(total)}" if total else count(done)
        counted += "" if self._unit == "bytes" else f" {self._unit}"
        bar = f'<progress value="{done}" max="{total}"></progress>' if total else "<progress></progress>"
        took = f" in {time.monotonic() - self._started:.1f} s" if ended else ""
        label = html.escape(description)  # a name is anyone's text
        return {
            "text/plain": f"{description}: {counted}{took}",
            "text/html": f'<div class="lakelet-progress">{bar} {label}: {counted}{took}</div>',
        }
