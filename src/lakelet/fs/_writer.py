"""What ``fs.open(path, "wb")`` returns: a temp file in the lake, bound under its name on close.

fsspec's callers close files from many places — a ``with`` block, pandas'
handles, fsspec's ``OpenFile`` and its text and compression wrappers — and most
of them close on the way out of an exception too. A write-once name must not
be bound to half a file, so a close while an exception other than the one
being handled where the file was opened propagates binds nothing; nor does a
file that is dropped unclosed, or ``discard()``-ed.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lakelet.core._durable import new_temp_path

__all__ = ["NewFile"]


class NewFile(io.FileIO):
    """A temp file handed to ``bind`` when closed cleanly (or on ``commit`` in a transaction).

    ``bind`` takes the temp file over: it moves it in, hands it on, or removes it.
    """

    def __init__(self, bind: Callable[[Path], None], tmp_dir: Path, autocommit: bool = True) -> None:
        self._tmp = new_temp_path(tmp_dir)
        self._bind = bind
        self._autocommit = autocommit
        self._failed = False
        self._settled = False  # bound or dropped: commit and discard do nothing more
        # an exception already being handled where we were opened is not ours to fail on
        self._handling = sys.exc_info()[1]
        super().__init__(self._tmp, "xb")

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        self._failed = exc_type is not None
        super().__exit__(exc_type, *rest)

    def close(self) -> None:
        if self.closed:
            return
        raised = sys.exc_info()[1]
        failed = self._failed or (raised is not None and raised is not self._handling)
        super().close()
        if failed:
            self.discard()
        elif self._autocommit:
            self.commit()

    def commit(self) -> None:
        """Bind the name to what was written (fsspec calls this at the end of a transaction)."""
        if self._settled:
            return
        self._settled = True
        try:
            self._bind(self._tmp)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def discard(self) -> None:
        """Drop what was written: nothing is bound."""
        if not self._settled:
            self._settled = True
            self._tmp.unlink(missing_ok=True)

    def __del__(self) -> None:
        self._failed = True  # dropped without a close: bind nothing
        super().__del__()
