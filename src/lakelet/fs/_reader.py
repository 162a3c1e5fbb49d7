"""What ``lakelet://`` hands a reader: the verified object, its ``size`` (fsspec's own code
asks its files for it) and ``read_buffer``, its bytes without a copy."""

from __future__ import annotations

import contextlib
import io
import mmap
import os
from typing import IO

__all__ = ["Opened"]


class Opened(io.BufferedReader):
    """A verified reader that also tells its ``size``, as fsspec's own code asks its files,
    and hands out its bytes without a copy (``read_buffer``)."""

    def __init__(self, verified: IO[bytes]) -> None:
        assert isinstance(verified, io.BufferedReader)  # what File.open("rb") returns
        raw = verified.detach()  # verified and rewound: read from the start again
        raw.seek(0)
        super().__init__(raw)
        self.size = os.fstat(self.fileno()).st_size
        self._map: mmap.mmap | None = None

    def read_buffer(self, nbytes: int | None = -1) -> memoryview:
        """The next ``nbytes`` (all the rest when negative) as a view of the file mapped in
        memory. pyarrow reads every fsspec file through a wrapper that holds a lock and
        copies what ``read`` returns (a Parquet read through ``lakelet://`` took 1.1-1.2x a
        plain path's time); it asks ``read_buffer`` instead when a file has one, and takes
        the view as it is. The mapping is safe: a lake object is written whole under a
        temporary name and renamed, never changed in place (evict unlinks; the map stays)."""
        start = self.tell()
        end = self.size if nbytes is None or nbytes < 0 else min(self.size, start + nbytes)
        if end <= start:
            return memoryview(b"")
        if self._map is None:
            self._map = mmap.mmap(self.fileno(), 0, access=mmap.ACCESS_READ)
        self.seek(end)
        return memoryview(self._map)[start:end]

    def close(self) -> None:
        if self._map is not None:
            with contextlib.suppress(BufferError):  # a view still held: unmapped when it goes
                self._map.close()
        super().close()
