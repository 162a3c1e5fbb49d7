"""Files written during a stage: held back until the stage returns, discarded if it raises.

``File(name).open("w")`` writes to a temp file (``facade._writer``). Outside a
stage, closing it binds the name at once; inside one, it lands here, and the
stage binds every file it wrote only after the function returned, so a failing
stage binds nothing. Datasets written meanwhile are noted here too, for the
stage's lineage record.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lakelet.core.errors import InvalidNameError

__all__ = ["CURRENT", "PendingOutputs", "collecting", "implicit_name"]


@dataclass
class PendingOutputs:
    """The files one stage run has written so far."""

    implicit_prefix: str  # where File() with no name goes: stages/<stage>/<key>/
    written: dict[str, Path] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)  # user meta of written files
    datasets: list[dict[str, object]] = field(default_factory=list)  # versions committed meanwhile
    count: int = 0

    def implicit_name(self) -> str:
        self.count += 1
        return f"{self.implicit_prefix}file-{self.count}"

    def discard(self) -> None:
        for tmp in self.written.values():
            tmp.unlink(missing_ok=True)
        self.written.clear()


CURRENT: ContextVar[PendingOutputs | None] = ContextVar("lakelet_pending_outputs", default=None)


@contextlib.contextmanager
def collecting(implicit_prefix: str) -> Iterator[PendingOutputs]:
    pending = PendingOutputs(implicit_prefix)
    token = CURRENT.set(pending)
    try:
        yield pending
    except BaseException:
        pending.discard()
        raise
    finally:
        CURRENT.reset(token)


def implicit_name() -> str:
    pending = CURRENT.get()
    if pending is None:
        raise InvalidNameError("File() without a name is only for outputs created inside a stage")
    return pending.implicit_name()
