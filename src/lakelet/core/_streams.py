"""The binary streams lakelet reads, as structural types.

Readers come from ``open(path, "rb")`` (buffered or not), ``io.BytesIO``, urllib and
fsspec, and are read in chunks into one reused buffer: ``readinto``, which
``typing.BinaryIO`` does not declare (and ``io.FileIO`` is no ``BinaryIO`` at all).
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

__all__ = ["Readable", "Reader"]


class Readable(Protocol):
    """Anything with ``read``: what ``shutil.copyfileobj`` copies from."""

    def read(self, size: int = -1, /) -> bytes: ...


class Reader(Readable, Protocol):
    """A binary stream open for reading, closed after use (also as a context manager)."""

    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> None: ...
