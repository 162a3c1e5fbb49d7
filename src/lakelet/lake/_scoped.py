"""Scoped object stores with Conducto's verbs: ``lake.user`` and ``lake.pipeline(run)``.

Names here may be overwritten and deleted. Writers of one scope take an
exclusive ``flock`` on the scope, so an overwrite or delete never frees a
blob that a concurrent put just bound; readers take no lock and retry once
if a blob was replaced under them.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from lakelet.catalog._catalog import Catalog
from lakelet.core import _config
from lakelet.core._digest import Digest
from lakelet.core._durable import check_replaceable, new_temp_path, publish_file
from lakelet.core._names import validate_name, validate_prefix
from lakelet.core._streams import Reader
from lakelet.core.errors import IntegrityError, InvalidArgumentError, NotFoundError, SourceError, StorageError
from lakelet.remote._scoped_remote import RemoteScope
from lakelet.storage._objects import StoredBlob, VerifiedReader, write_blob
from lakelet.storage._refs import NameRecord, utc_now
from lakelet.storage._scopes import ScopeLayout

__all__ = ["PipelineStore", "ScopedStore"]


class ScopedStore:
    """A user's or a pipeline run's object store: put/puts/get/gets/list/size/exists/url/delete."""

    def __init__(
        self,
        layout: ScopeLayout,
        tmp_dir: Path,
        catalog: Catalog,
        reader: VerifiedReader,
        remote: RemoteScope | None = None,
    ) -> None:
        self._layout = layout
        self._tmp = tmp_dir
        self._catalog = catalog
        self._reader = reader
        # With a remote, the remote is the store (every machine sees the same names) and
        # the local directory is a verified cache of what this machine wrote or read.
        self._remote = remote

    def __repr__(self) -> str:
        return f"<ScopedStore {self.scope}>"

    @property
    def scope(self) -> str:
        return self._layout.scope

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._layout.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._layout.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # writing

    def put(self, name: str, file: str | os.PathLike[str]) -> None:
        """Store the local file ``file`` under ``name``, replacing what was there."""
        name = validate_name(name)
        try:
            reader = open(file, "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise NotFoundError(f"source {os.fspath(file)} does not exist") from None
        except IsADirectoryError:
            raise SourceError(f"{os.fspath(file)} is a directory, not a file") from None
        with reader:
            self._put_stream(name, reader)

    def puts(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``, replacing what was there."""
        name = validate_name(name)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"puts() takes bytes, not {type(data).__name__}")
        self._put_stream(name, io.BytesIO(data))

    def _put_stream(self, name: str, reader: Reader) -> None:
        layout = self._layout
        with self._locked():
            layout.directory.joinpath("blobs").mkdir(exist_ok=True)
            blob = write_blob(reader, self._tmp, lambda d: layout.blob_path(name, d))
            record = NameRecord(
                self.scope, name, str(blob.digest), blob.size, utc_now(), _config.current_user()
            )
            if self._remote is not None:
                try:
                    self._remote.put(blob.path, record)
                except BaseException:
                    current = layout.refs.read(name)
                    if blob.created and (current is None or current.digest != record.digest):
                        self._remove_blob(record)
                    raise
            self._bind_local(record, blob)

    def _bind_local(self, record: NameRecord, blob: StoredBlob) -> None:
        previous = self._layout.refs.put(record)
        if previous is not None and previous.digest != record.digest:
            self._remove_blob(previous)
        self._catalog.upsert([record])
        self._reader.remember(blob)

    def delete(self, name: str, recursive: bool = False) -> None:
        """Delete ``name``; with ``recursive``, also every name under ``name/``."""
        name = validate_name(name)
        with self._locked():
            names = [name] if self.exists(name) else []
            if recursive:
                names += self.list(name + "/")
            if not names:
                raise NotFoundError(f"no name {name!r} in scope {self.scope}", name=name)
            if self._remote is not None:
                self._remote.delete(names)
            for n in names:
                previous = self._layout.refs.delete(n)
                if previous is not None:
                    self._remove_blob(previous)
            self._catalog.delete(self.scope, names)

    def _remove_blob(self, record: NameRecord) -> None:
        path = self._layout.blob_path(record.name, Digest.parse(record.digest))
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    # reading

    def record(self, name: str) -> NameRecord:
        name = validate_name(name)
        if self._remote is not None:
            record = self._remote.record(name)
        else:
            record = self._catalog.get(self.scope, name)
        if record is None:
            raise NotFoundError(f"no name {name!r} in scope {self.scope}", name=name)
        return record

    def open_reader(self, name: str) -> tuple[io.BufferedReader, NameRecord]:
        for _ in range(2):  # a concurrent put may replace the content between lookup and open
            record = self.record(name)
            path = self._layout.blob_path(record.name, Digest.parse(record.digest))
            try:
                return self._reader.open(path, Digest.parse(record.digest), record.size), record
            except FileNotFoundError:
                if self._remote is not None and self._fetch(record):
                    return self._reader.open(path, Digest.parse(record.digest), record.size), record
        raise NotFoundError(f"the content of {name!r} in scope {self.scope} is missing", name=name)

    def _fetch(self, record: NameRecord) -> bool:
        """Cache the remote copy of ``record`` locally, verified; False if it changed meanwhile."""
        assert self._remote is not None
        expected = Digest.parse(record.digest)
        layout = self._layout

        def place(actual: Digest) -> Path:
            return layout.blob_path(record.name, actual) if actual == expected else new_temp_path(self._tmp)

        with self._locked():
            layout.directory.joinpath("blobs").mkdir(exist_ok=True)
            try:
                reader = self._remote.open_file(record.name)
            except FileNotFoundError:
                return False
            with reader:
                blob = write_blob(reader, self._tmp, place)
            if blob.digest != expected:
                blob.path.unlink(missing_ok=True)
                if self._remote.record(record.name) != record:
                    return False  # overwritten while we read: the caller looks again
                raise IntegrityError(
                    f"{record.name!r} in scope {self.scope} on remote {self._remote.remote.url} "
                    f"does not match its digest {record.digest}: nothing was cached",
                    digest=record.digest,
                )
            self._bind_local(record, blob)
        return True

    def get(self, name: str, file: str | os.PathLike[str]) -> None:
        """Write the content of ``name`` to the local file ``file``, replacing it at once.
        On any error ``file`` keeps what it held (or stays absent) and no temp file is left."""
        reader, _ = self.open_reader(name)
        target = Path(file)
        with reader:
            _check_target(target)
            try:
                # the temp beside the target: a rename moves a name only within one filesystem
                publish_file(target, reader, target.parent, replace=True)
            except IsADirectoryError:
                raise InvalidArgumentError(f"{target} is a directory; give a file path") from None
            except OSError as e:  # a full disk, a read-only folder, /proc
                raise StorageError(f"cannot write {target}: {e.strerror or e}", path=str(target)) from None

    def gets(self, name: str, byte_range: list[int] | tuple[int, int] | None = None) -> bytes:
        """The content of ``name``, or only bytes ``[begin, end)`` of it."""
        if byte_range is not None and self._remote is not None:
            record = self.record(name)
            begin, end = _check_range(byte_range, record.size)
            local = self._layout.blob_path(record.name, Digest.parse(record.digest))
            if not local.is_file():  # one ranged request instead of fetching the whole file
                return self._remote.read_range(record, begin, end) if end > begin else b""
        reader, record = self.open_reader(name)
        with reader:
            if byte_range is None:
                return reader.read()
            begin, end = _check_range(byte_range, record.size)
            reader.seek(begin)
            return reader.read(end - begin)

    def list(self, prefix: str = "") -> list[str]:
        """Every name starting with ``prefix``, sorted."""
        prefix = validate_prefix(prefix)
        if self._remote is not None:
            return self._remote.names(prefix)
        return self._catalog.names(self.scope, prefix)

    def size(self, name: str) -> int:
        return self.record(name).size

    def exists(self, name: str) -> bool:
        name = validate_name(name)
        if self._remote is not None:
            return self._remote.record(name) is not None
        return self._catalog.get(self.scope, name) is not None

    def url(self, name: str, expires: int = 3600) -> str:
        """A URL the content can be read from: presigned on cloud remotes, ``file://`` locally."""
        record = self.record(name)
        if self._remote is not None:
            return self._remote.url(record.name, expires)
        return self._layout.blob_path(record.name, Digest.parse(record.digest)).as_uri()


class PipelineStore(ScopedStore):
    """The store of one pipeline run; ``archive()`` deletes all of it."""

    def archive(self) -> None:
        """Delete every name and byte of this run."""
        with self._locked():
            if self._remote is not None:
                self._remote.delete_all()
            self._catalog.drop_scope(self.scope)
            trash = self._tmp / f"trash-{os.getpid()}-{os.urandom(4).hex()}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(self._layout.directory, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _check_target(target: Path) -> None:
    try:
        if not target.parent.is_dir():  # publish_file would create it: bad input changes nothing
            raise NotFoundError(f"directory {target.parent} does not exist")
        check_replaceable(target)
    except OSError as e:  # a segment too long for the filesystem
        raise StorageError(f"cannot write {target}: {e.strerror or e}", path=str(target)) from None


def _check_range(byte_range: list[int] | tuple[int, int], size: int) -> tuple[int, int]:
    try:
        begin, end = (int(x) for x in byte_range)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"byte_range must be [begin, end), got {byte_range!r}") from None
    if not 0 <= begin <= end:
        raise InvalidArgumentError(f"byte_range must satisfy 0 <= begin <= end, got {byte_range!r}")
    return min(begin, size), min(end, size)  # as a slice: past the end is empty
