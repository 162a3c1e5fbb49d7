"""``File(name).open("w")``: a temp file bound under the name when it is closed without an error.

Inside a stage it is handed to the stage's pending outputs (``lake._pending``)
instead, and bound when the stage returns.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from lakelet.core._durable import new_temp_path
from lakelet.core._meta import check_user_meta
from lakelet.lake._pending import CURRENT

if TYPE_CHECKING:
    from lakelet.facade._lake import Lake

__all__ = ["open_for_writing"]


class _Writer(io.FileIO):
    """A temp file that hands itself to the lake when closed without an error."""

    def __init__(self, lake: Lake, name: str, meta: dict[str, Any]) -> None:
        self._lake = lake
        self._name = name
        self._meta = meta
        self._tmp = new_temp_path(lake.root / "tmp")
        super().__init__(self._tmp, "xb")
        self.failed = False

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self.failed = exc_type is not None
        super().__exit__(exc_type, *rest)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self.failed:
            self._tmp.unlink(missing_ok=True)
            return
        pending = CURRENT.get()
        if pending is not None:
            pending.written[self._name] = self._tmp  # bound when the stage returns
            if self._meta:
                pending.meta[self._name] = self._meta
        else:
            try:
                self._lake.add(self._tmp, self._name, move=True, meta=self._meta, progress=False)
            finally:
                self._tmp.unlink(missing_ok=True)


class _TextWriter(io.TextIOWrapper):
    def __init__(self, writer: _Writer, encoding: str) -> None:
        super().__init__(io.BufferedWriter(writer), encoding=encoding)
        self._writer = writer

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self._writer.failed = exc_type is not None  # an error inside `with` binds nothing
        super().__exit__(exc_type, *rest)


def open_for_writing(
    lake: Lake, name: str, mode: str, encoding: str | None, meta: Mapping[str, Any] | None
) -> IO[Any]:
    """``meta`` is checked now: bad meta fails before anything is written."""
    writer = _Writer(lake, name, check_user_meta(meta))
    if mode == "wb":
        return writer
    return _TextWriter(writer, encoding or "utf-8")
