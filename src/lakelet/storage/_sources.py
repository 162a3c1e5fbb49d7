"""What `add` can ingest: a local file or directory, an http(s) URL, any fsspec URL, or data
in memory (bytes, a binary file object, an iterable of bytes)."""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import os
import stat
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeAlias

from lakelet.core._streams import Readable, Reader
from lakelet.core.errors import InvalidArgumentError, NotFoundError, SourceError

__all__ = ["AddSource", "Source", "from_memory", "read_small", "redact", "resolve"]

# What ``Lake.add`` takes: a path or URL, or the content itself
AddSource: TypeAlias = "str | os.PathLike[str] | bytes | bytearray | memoryview | Readable | Iterable[bytes]"

_HTTP_TIMEOUT_S = 60
_SHOWN = 10  # entries named in a warning line; the rest counted
_log = logging.getLogger("lakelet.sources")


@dataclass(frozen=True, slots=True)
class Source:
    """One file to ingest. ``relative`` is '' for a single file, else its path under a directory.

    A local file is known by ``location``, its path as a string (a directory add lists
    10,000 of these and builds a ``Path`` for few of them); content the caller holds by ``held``;
    any other source by ``opener``.
    """

    relative: str
    location: str | None
    size: int | None
    opener: Callable[[], Reader] | None = None
    held: bytes | None = None

    @classmethod
    def of_bytes(cls, data: bytes) -> Source:
        return cls("", None, len(data), held=data)

    @property
    def local_path(self) -> Path | None:
        return None if self.location is None else Path(self.location)

    def open(self) -> Reader:
        if self.held is not None:
            return io.BytesIO(self.held)
        if self.opener is not None:
            return self.opener()
        assert self.location is not None
        try:
            return open(self.location, "rb", buffering=0)
        except PermissionError:
            raise SourceError(f"cannot read {self.location}: permission denied") from None


def resolve(src: str | os.PathLike[str], follow_symlinks: bool = True) -> list[Source]:
    """Every file that ``src`` names, sorted; raises NotFoundError or SourceError.

    In a directory, a symlink to a file is followed (unless ``follow_symlinks`` is False);
    one that leads out of the directory, and every entry left out (a symlink to a folder, a
    dangling one, a FIFO, a socket, a device), is reported as a warning of the
    ``lakelet.sources`` logger."""
    text = os.fspath(src)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme in ("http", "https"):
            return [Source("", None, None, lambda: _open_http(text))]
        if scheme != "file":
            return _resolve_fsspec(text)
        text = text[len("file://") :]
    return _resolve_local(Path(text).expanduser(), follow_symlinks)


def _resolve_local(path: Path, follow_symlinks: bool = True) -> list[Source]:
    if path.is_dir():
        walk = _Walk(os.path.realpath(path), follow_symlinks)
        try:
            found = list(walk.files(os.fspath(path), ""))
        except OSError as e:  # an unreadable subdirectory: refuse rather than add part of it
            raise SourceError(f"cannot read {e.filename or path}: {e.strerror}") from None
        walk.report(path)
        return [Source(rel, location, size) for rel, location, size in found]
    if path.is_file():
        return [Source("", os.fspath(path), path.stat().st_size)]
    if path.exists():
        raise SourceError(f"{path} is neither a file nor a directory")
    raise NotFoundError(f"source {path} does not exist", name=str(path))


class _Walk:
    """The regular files under a directory, and what it passed over or followed out of it."""

    def __init__(self, root: str, follow_symlinks: bool) -> None:
        self._root = root + os.sep
        self._follow = follow_symlinks
        self.skipped: list[str] = []  # 'rel (why)'
        self.outside: list[str] = []  # 'rel -> target'

    def files(self, directory: str, relative: str) -> Iterator[tuple[str, str, int]]:
        """(relative path, path, size) of every regular file under ``directory``, sorted
        segment by segment. ``scandir`` knows most entry types without a stat, which matters
        at 10,000 files: only symlinks cost more."""
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            rel = f"{relative}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                yield from self.files(entry.path, rel + "/")
            elif entry.is_file(follow_symlinks=False):
                yield rel, entry.path, entry.stat(follow_symlinks=False).st_size
            elif entry.is_symlink():
                if self._symlink(entry, rel):
                    yield rel, entry.path, entry.stat().st_size
            else:
                self.skipped.append(f"{rel} ({_kind(entry)})")

    def _symlink(self, entry: os.DirEntry[str], rel: str) -> bool:
        """Whether to add the file ``entry`` links to."""
        if entry.is_dir():
            self.skipped.append(f"{rel} (a symlink to a folder: not entered)")
        elif not entry.is_file():
            to = "no regular file" if os.path.exists(entry.path) else "nothing"
            self.skipped.append(f"{rel} (a symlink to {to})")
        elif not self._follow:
            self.skipped.append(f"{rel} (a symlink, not followed)")
        else:
            target = os.path.realpath(entry.path)
            if not target.startswith(self._root):
                self.outside.append(f"{rel} -> {target}")
            return True
        return False

    def report(self, path: Path) -> None:
        for what, items in (
            ("followed symlinks out of it", self.outside),
            ("left out what is not a regular file", self.skipped),
        ):
            if items:
                more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
                _log.warning("adding %s: %s: %s%s", path, what, ", ".join(items[:_SHOWN]), more)


def _kind(entry: os.DirEntry[str]) -> str:
    mode = entry.stat(follow_symlinks=False).st_mode
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device")):
        if test(mode):
            return kind
    return "a device" if stat.S_ISBLK(mode) else "not a regular file"


def read_small(source: Source, limit: int) -> bytes | None:
    """The whole content of a local ``source`` if it is at most ``limit`` bytes, else None.

    Plain ``read`` calls on a descriptor: for a small file, a buffered file object
    and a reusable buffer cost more CPU than the read itself.
    """
    assert source.location is not None
    try:
        fd = os.open(source.location, os.O_RDONLY)
    except PermissionError:
        raise SourceError(f"cannot read {source.location}: permission denied") from None
    try:
        wanted = (source.size or 0) + 1  # all of it, and one byte more if it grew since listed
        data = os.read(fd, wanted)
        # A regular file reads short only at its end: a full read means it grew, so read on
        # to one byte past the limit (it is then too big) or to the end.
        if len(data) == wanted and len(data) <= limit:
            data += os.read(fd, limit + 1 - len(data))
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


def redact(src: str) -> str:
    """A source as it may be shown or recorded: no credentials, no query (presigned tokens)."""
    if "://" not in src:
        return src
    parts = urllib.parse.urlsplit(src)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _open_http(url: str) -> Reader:
    import urllib.error  # urllib.request pulls in http, ssl and email: ~25 ms
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    headers = {}
    if parts.username is not None:
        # urllib cannot take credentials inside the URL: send them as Basic auth.
        userinfo = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        netloc = parts.netloc.rsplit("@", 1)[1]
        url = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    shown = redact(url)
    try:
        request = urllib.request.Request(url, headers=headers)
        response = urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S)
        return _HttpBody(response, shown)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise NotFoundError(f"source {shown} does not exist (HTTP 404)") from None
        raise SourceError(f"cannot download {shown}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise SourceError(f"cannot download {shown}: {reason}") from None


class _HttpBody:
    """A response body that is whole or an error: http.client's ``readinto`` ends quietly
    when a server closes before the ``Content-Length`` it announced (D2: a 5,000-byte body of
    a promised 100,000 was bound), and a cut chunked body or connection raises its own
    exceptions mid-copy. Each becomes a SourceError, so the add stores and binds nothing."""

    def __init__(self, response: Any, shown: str) -> None:  # an http.client.HTTPResponse
        self._response = response
        self._shown = shown
        self._expected: int | None = response.length  # None: chunked, or no Content-Length
        self._received = 0

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        with self._errors():
            n: int = self._response.readinto(buffer)
        return self._count(n, len(buffer))

    def read(self, size: int = -1, /) -> bytes:
        with self._errors():
            data: bytes = self._response.read(size)
        self._count(len(data), size)
        return data

    def _count(self, n: int, asked: int) -> int:
        self._received += n
        if n == 0 and asked != 0 and self._expected is not None and self._received < self._expected:
            raise SourceError(
                f"cannot download {self._shown}: the server sent {self._received} of the "
                f"{self._expected} bytes it announced"
            )
        return n

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        import http.client

        try:
            yield
        except http.client.IncompleteRead:
            raise SourceError(
                f"cannot download {self._shown}: the connection closed before the end of the body"
            ) from None
        except (http.client.HTTPException, OSError) as e:
            raise SourceError(f"cannot download {self._shown}: {type(e).__name__}: {e}") from None

    def seek(self, offset: int, whence: int = 0, /) -> int:
        raise io.UnsupportedOperation("an HTTP body cannot seek")

    def close(self) -> None:
        self._response.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _resolve_fsspec(url: str) -> list[Source]:
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise SourceError(f"cannot read {redact(url)}: {e}") from None
    try:
        if fs.isdir(root):
            infos = fs.find(root, detail=True)
            prefix = root.rstrip("/") + "/"
            return [
                Source(path[len(prefix) :], None, info.get("size"), _fsspec_opener(fs, path))
                for path, info in sorted(infos.items())
                if info.get("type") == "file"
            ]
        if fs.isfile(root):
            return [Source("", None, fs.size(root), _fsspec_opener(fs, root))]
    except OSError as e:
        raise SourceError(f"cannot read {redact(url)}: {e}") from None
    raise NotFoundError(f"source {redact(url)} does not exist")


def _fsspec_opener(fs: Any, path: str) -> Callable[[], Reader]:  # fs: an fsspec filesystem
    def opener() -> Reader:
        file: Reader = fs.open(path, "rb")
        return file

    return opener


def from_memory(data: object) -> tuple[Source, str] | None:
    """A single-file Source for content held by the caller, and how to name it in lineage:
    bytes, a binary file object (read from where it stands, to its end, and left open) or an
    iterable of bytes (read once); None for a path or URL. InvalidArgumentError for a text
    stream or anything else."""
    if isinstance(data, str | os.PathLike):
        return None
    if isinstance(data, bytes | bytearray | memoryview):
        # a copy: the caller may change a bytearray while we store it
        return Source.of_bytes(bytes(data)), "<bytes>"
    if isinstance(data, io.TextIOBase):
        raise InvalidArgumentError("add() takes a binary file object: open the file with 'rb', not 'r'")
    if callable(getattr(data, "read", None)):
        name = getattr(data, "name", None)
        label = f"<file object {name}>" if isinstance(name, str) else "<file object>"
        return Source("", None, _remaining(data), _read_once(lambda: _Borrowed(data))), label
    if isinstance(data, Iterable) and not isinstance(data, dict):
        chunks = iter(data)
        return Source("", None, None, _read_once(lambda: _Chunks(chunks))), "<iterator>"
    raise InvalidArgumentError(
        f"add() takes a path, a URL, bytes, a binary file object or an iterable of bytes, "
        f"not {type(data).__name__}"
    )


def _remaining(data: Any) -> int | None:
    """How many bytes a seekable file object holds past its position (for progress), else None."""
    try:
        if not data.seekable():
            return None
        here = data.tell()
        end = data.seek(0, io.SEEK_END)
        data.seek(here)
    except (AttributeError, OSError, ValueError):
        return None
    return int(end - here) if isinstance(end, int) else None


def _read_once(opener: Callable[[], Reader]) -> Callable[[], Reader]:
    """A stream the caller handed over can be read once: a second read would store nothing."""
    opened = False

    def once() -> Reader:
        nonlocal opened
        if opened:
            raise SourceError("a file object or iterator given to add() was already read")
        opened = True
        return opener()

    return once


class _StreamReader:
    """A Reader over the caller's stream: ``readinto`` from ``_next`` chunks; closing it leaves
    the caller's object open (it is theirs); it cannot seek."""

    def __init__(self) -> None:
        self._pending = memoryview(b"")

    def _next(self) -> bytes:  # b"" at the end
        raise NotImplementedError

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        while not self._pending:
            chunk = self._next()
            if not chunk:
                return 0
            self._pending = memoryview(chunk)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def read(self, size: int = -1, /) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            buffer = bytearray(1 << 20 if size < 0 else size - len(out))
            n = self.readinto(buffer)
            if n == 0:
                break
            out += buffer[:n]
        return bytes(out)

    def seek(self, offset: int, whence: int = 0, /) -> int:
        raise io.UnsupportedOperation("a stream given to add() cannot seek")

    def close(self) -> None:
        self._pending = memoryview(b"")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_READ_SIZE = 4 << 20


class _Borrowed(_StreamReader):
    def __init__(self, file: Any) -> None:
        super().__init__()
        self._file = file

    def _next(self) -> bytes:
        chunk = self._file.read(_READ_SIZE)
        if chunk is None:  # a non-blocking raw stream with nothing ready: not a file to add
            raise SourceError("the file object given to add() returned no data (non-blocking?)")
        return _checked(chunk, "the file object given to add()")


class _Chunks(_StreamReader):
    def __init__(self, chunks: Iterator[object]) -> None:
        super().__init__()
        self._chunks = chunks

    def _next(self) -> bytes:
        for chunk in self._chunks:  # skips empty chunks: b"" would end the stream early
            data = _checked(chunk, "the iterator given to add()")
            if data:
                return data
        return b""


def _checked(chunk: object, what: str) -> bytes:
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    raise InvalidArgumentError(f"{what} yielded {type(chunk).__name__}, not bytes: open it in binary mode")
