"""Files written during a stage: held back until the stage returns, discarded if it raises.

``File(name).open("w")`` writes to a temp file. Outside a stage, closing it
binds the name at once; inside one, the stage binds every file it wrote only
after the function returned, so a failing stage binds nothing.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ._errors import InvalidNameError
from ._objects import new_temp_path

if TYPE_CHECKING:
    from ._lake import Lake


@dataclass
class PendingOutputs:
    """The files one stage run has written so far."""

    implicit_prefix: str  # where File() with no name goes: stages/<stage>/<key>/
    written: dict[str, Path] = field(default_factory=dict)
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


class _Writer(io.FileIO):
    """A temp file that hands itself to the lake when closed without an error."""

    def __init__(self, lake: Lake, name: str) -> None:
        self._lake = lake
        self._name = name
        self._tmp = new_temp_path(lake.root / "tmp")
        super().__init__(self._tmp, "xb")
        self._failed = False

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self._failed = exc_type is not None
        super().__exit__(exc_type, *rest)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._failed:
            self._tmp.unlink(missing_ok=True)
            return
        pending = CURRENT.get()
        if pending is not None:
            pending.written[self._name] = self._tmp  # bound when the stage returns
        else:
            try:
                self._lake.add(self._tmp, self._name, move=True)
            finally:
                self._tmp.unlink(missing_ok=True)


class _TextWriter(io.TextIOWrapper):
    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.buffer.raw._failed = exc_type is not None  # an error inside `with` binds nothing
        super().__exit__(exc_type, *rest)


def open_for_writing(lake: Lake, name: str, mode: str, encoding: str | None) -> IO[Any]:
    writer = _Writer(lake, name)
    if mode == "wb":
        return writer
    return _TextWriter(io.BufferedWriter(writer), encoding=encoding or "utf-8")
