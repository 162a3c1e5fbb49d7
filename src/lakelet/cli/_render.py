"""Terminal output: a progress bar that appears only for work longer than about a second."""

from __future__ import annotations

import logging
import os
import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # imported where first drawn: most commands print neither
    from rich.progress import Progress, TaskID
    from rich.table import Table

__all__ = ["DelayedBar", "human_size", "new_table", "show_warnings", "stderr", "stdout", "warn"]

# Bars appear only for work that lasts; the variable lets tests see one at once.
_DELAY_S = float(os.environ.get("LAKELET_PROGRESS_DELAY", "1.0"))

# Piped output must not be cut at rich's default 80 columns: a script reading
# `lakelet ls | grep` needs whole names.
_PIPE_WIDTH = 100_000
# Markup off by default: what is printed quotes names, paths, URLs and records a peer wrote, and
# "[/red]" in a name must print as it is (or "[bold]" vanish). A print that styles says
# markup=True and escapes what it quotes (``warn``).
stdout = Console(soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else _PIPE_WIDTH)
stderr = Console(
    stderr=True, soft_wrap=True, markup=False, width=None if sys.stderr.isatty() else _PIPE_WIDTH
)


def warn(text: str) -> None:
    """One 'warning:' line on stderr; ``text`` printed as it is."""
    stderr.print(f"[yellow]warning:[/yellow] {escape(text)}", markup=True, highlight=False)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def new_table(**options: Any) -> Table:
    """A rich ``Table(**options)``, imported by the commands that print one."""
    from rich.table import Table

    return Table(**options)


class DelayedBar:
    """A ``lakelet.Progress`` that draws a rich bar once work has lasted ``_DELAY_S``.

    Nothing is drawn when stdout or stderr is not a terminal (pipes, CI logs).
    """

    def __init__(self, description: str) -> None:
        self._description = description
        self._enabled = sys.stdout.isatty() and sys.stderr.isatty()
        self._started = time.monotonic()
        self._total = 0
        self._done = 0
        self._bar: tuple[Progress, TaskID] | None = None  # the bar and its one task, once drawn

    def phase(self, description: str) -> None:
        """A new step over the same bytes (the upload after an add): counted from zero."""
        self._total = self._done = 0
        self._description = f"{description} {self._description.split(' ', 1)[-1]}"
        if self._bar is not None:
            bar, task = self._bar
            bar.update(task, description=self._description, completed=0, total=None)

    def add_total(self, nbytes: int, /) -> None:
        self._total += nbytes
        if self._bar is not None:
            bar, task = self._bar
            bar.update(task, total=self._total)

    def advance(self, nbytes: int, /) -> None:
        self._done += nbytes
        if self._bar is None:
            if not self._enabled or time.monotonic() - self._started < _DELAY_S:
                return
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            bar = Progress(
                TextColumn("{task.description}", markup=False),  # names, never markup
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=stderr,
                transient=True,
            )
            bar.start()
            self._bar = (
                bar,
                bar.add_task(self._description, total=self._total or None),
            )
        bar, task = self._bar
        bar.update(task, completed=self._done)

    def __enter__(self) -> DelayedBar:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar[0].stop()


class _WarningLines(logging.Handler):
    """Each warning the library logs (a record read back that it skipped) as one line."""

    def emit(self, record: logging.LogRecord) -> None:
        warn(" ".join(record.getMessage().split()))  # one line, whatever it quotes


def show_warnings() -> None:
    """Print lakelet's logged warnings on stderr, one line each (the library never prints)."""
    logger = logging.getLogger("lakelet")
    if not any(isinstance(h, _WarningLines) for h in logger.handlers):
        logger.addHandler(_WarningLines(logging.WARNING))
