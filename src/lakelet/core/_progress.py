"""Progress reporting: the library calls a small callback; the CLI renders it.

The library never prints. Long operations (hashing, copying, transfers) take
an optional ``Progress`` and report bytes through it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NoProgress", "Progress", "SILENT"]


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
