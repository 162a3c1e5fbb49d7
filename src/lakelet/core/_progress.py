"""Progress reporting: the library calls a small callback; the CLI renders it.

The library never prints. Long operations (hashing, copying, transfers) take
an optional ``Progress`` and report bytes through it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NoProgress", "Progress", "SILENT", "begin_phase"]


class Progress(Protocol):
    def add_total(self, nbytes: int, /) -> None:
        """More work became known (bytes to process)."""

    def advance(self, nbytes: int, /) -> None:
        """``nbytes`` more were processed."""


class NoProgress:
    """The silent default."""

    def add_total(self, nbytes: int, /) -> None:
        pass

    def advance(self, nbytes: int, /) -> None:
        pass


SILENT: Progress = NoProgress()


def begin_phase(progress: Progress, description: str) -> None:
    """Tell ``progress`` that the bytes that follow are a new step over the same data (the
    upload of what an add just stored): a bar with a ``phase(description)`` method starts its
    count again, so an 80 MB add shows 80 MB, not 160; any other Progress sees one running
    total, as before."""
    phase = getattr(progress, "phase", None)
    if callable(phase):
        phase(description)
