"""The remote: a lake's shared, authoritative copy in any fsspec store.

The remote mirrors the local layout (``objects/``, ``names/``) and adds an
append-only journal so that other machines learn of new names without
listing them all (see docs/remote-layout.md). This module only moves bytes
and records; deciding what to move is ``_sync``'s job.

Every store error surfaces as ``RemoteError`` naming the remote and the
cause, except the two outcomes callers act on: ``FileExistsError`` from a
conditional create and ``FileNotFoundError`` from a read.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import fsspec

from . import _faults
from ._digest import Digest
from ._errors import ConfigError, LakeletError, RemoteError
from ._names import name_key
from ._refs import NameRecord

REMOTE_FORMAT = 1
MARKER = "lakelet-remote.json"
_HOUR = "%Y-%m-%dT%H"
# Writers stamp journal segments with their own clock; a reader re-lists this
# far back so a writer whose clock is behind, or whose upload was slow, is not
# skipped. Documented in docs/remote-layout.md.
JOURNAL_LOOKBACK = timedelta(hours=1)

_LOCAL_PROTOCOLS = {"file", "local"}
T = TypeVar("T")
R = TypeVar("R")
_EXPECTED = (FileExistsError, FileNotFoundError)


class Remote:
    """One remote lake root, e.g. ``s3://bucket/team-lake``."""

    def __init__(
        self, url: str, storage_options: dict[str, Any] | None = None, transfers: int = 16
    ) -> None:
        self.url = url.rstrip("/")
        self.transfers = transfers  # concurrent requests; object stores reward parallel small transfers
        try:
            # A private instance (fsspec's shared one would keep credentials and endpoints
            # read from the environment of an earlier Remote) with no listing cache: a
            # sync must see segments written since the last one.
            options = {"skip_instance_cache": True, "use_listings_cache": False, **(storage_options or {})}
            self.fs, root = fsspec.core.url_to_fs(self.url, **options)
        except (ImportError, ValueError) as e:
            raise ConfigError(f"remote {url}: {_first_line(e)}") from None
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_local = bool(_LOCAL_PROTOCOLS & set(protocols))
        self.root = root.rstrip("/")

    def __repr__(self) -> str:
        return f"<Remote {self.url}>"

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn a store failure into one RemoteError line naming this remote."""
        try:
            yield
        except _EXPECTED:
            raise
        except LakeletError:  # ours (a failed digest check, a missing local object): not the store's
            raise
        except Exception as e:  # every backend has its own error classes
            raise RemoteError(f"remote {self.url}: {doing} failed: {_first_line(e)}") from e

    @contextlib.contextmanager
    def _no_bucket(self) -> Iterator[None]:
        # A write that finds nothing to write into means the bucket (or container) is missing.
        try:
            yield
        except FileNotFoundError as e:
            raise RemoteError(
                f"remote {self.url}: its bucket or container does not exist ({_first_line(e)})"
            ) from None

    def _batch(self) -> dict[str, int]:
        # async filesystems (s3fs, gcsfs, adlfs) run batches concurrently
        return {"batch_size": self.transfers} if getattr(self.fs, "async_impl", False) else {}

    def _path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if self.root else relative

    # the format marker

    def check_format(self, create: bool) -> None:
        """Read (or, when ``create``, write) the format marker at the remote root."""
        marker = self._path(MARKER)
        with self.errors("reading the format marker"):
            try:
                data = json.loads(self.fs.cat_file(marker))
            except FileNotFoundError:
                if not create:
                    raise RemoteError(
                        f"remote {self.url} holds no lake (no {MARKER}): "
                        f"create it with `lakelet init PATH --remote {self.url}`"
                    ) from None
                body = json.dumps({"format": REMOTE_FORMAT, "layout": "docs/remote-layout.md"}).encode()
                with contextlib.suppress(FileExistsError):
                    self.create(MARKER, body)
                return
        if data.get("format", 0) > REMOTE_FORMAT:
            raise RemoteError(
                f"remote {self.url} has format {data['format']}, newer than this lakelet "
                f"understands ({REMOTE_FORMAT}): upgrade lakelet"
            )

    # primitive writes: no reader ever sees a partial file

    def create(self, relative: str, data: bytes) -> None:
        """Write ``data`` at ``relative`` only if nothing is there; FileExistsError otherwise."""
        path = self._path(relative)
        with self.errors(f"creating {relative}"), self._no_bucket():
            if self.is_local:
                _local_create(Path(path), data)
                return
            # S3 If-None-Match: *, GCS ifGenerationMatch=0, Azure If-None-Match: *
            self.fs.pipe_file(path, data, mode="create")

    def upload(self, local: Path, relative: str) -> None:
        """Copy a local file to ``relative``, replacing it atomically if it exists."""
        path = self._path(relative)
        with self.errors(f"uploading {relative}"), self._no_bucket():
            if self.is_local:
                _local_put(local, Path(path))
            else:
                self.fs.put_file(str(local), path)  # object stores publish on completion only

    # plain files, for the scoped stores (see _scoped_remote)

    def put_bytes(self, relative: str, data: bytes) -> None:
        """Write ``data`` at ``relative``, replacing it atomically."""
        path = self._path(relative)
        with self.errors(f"writing {relative}"), self._no_bucket():
            if self.is_local:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                tmp = _local_tmp(Path(path))
                tmp.write_bytes(data)
                os.replace(tmp, path)
            else:
                self.fs.pipe_file(path, data)

    def read_bytes(self, relative: str, start: int | None = None, end: int | None = None) -> bytes | None:
        """The bytes at ``relative`` (or [start, end) of them); None if there is nothing."""
        with self.errors(f"reading {relative}"):
            try:
                return self.fs.cat_file(self._path(relative), start=start, end=end)
            except FileNotFoundError:
                return None

    def open_file(self, relative: str) -> BinaryIO:
        with self.errors(f"reading {relative}"):
            return self.fs.open(self._path(relative), "rb")

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """The bytes of each key, fetched concurrently (one request each)."""
        if not keys:
            return {}
        with self.errors(f"reading {keys[0].rsplit('/', 1)[0]}"):
            raw = self.fs.cat([self._path(k) for k in keys], on_error="raise", **self._batch())
        by_path = {self._path(k): k for k in keys}
        return {by_path.get(p) or by_path[self.fs._strip_protocol(p)]: body for p, body in raw.items()}

    def size(self, relative: str) -> int | None:
        """The size of the key at ``relative``; None if there is nothing."""
        with self.errors(f"checking {relative}"):
            try:
                return int(self.fs.size(self._path(relative)))
            except FileNotFoundError:
                return None

    def list_dir(self, relative: str) -> list[str]:
        """The names of the entries directly under ``relative`` (one listing page per 1,000)."""
        with self.errors(f"listing {relative}"):
            try:
                entries = self.fs.ls(self._path(relative), detail=False)
            except FileNotFoundError:
                return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def find(self, prefix: str) -> list[str]:
        """Keys (relative to the remote root) that start with ``prefix``."""
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        with self.errors(f"listing {directory or 'the remote'}"):
            try:
                found = self.fs.find(self._path(directory))
            except FileNotFoundError:
                return []
        root = f"{self.root}/" if self.root else ""
        keys = (self.fs._strip_protocol(k).removeprefix(root) for k in found)
        return [k for k in keys if k.startswith(prefix)]

    def remove(self, relative: str) -> None:
        with self.errors(f"deleting {relative}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(relative))

    def remove_tree(self, relative: str) -> None:
        with self.errors(f"deleting {relative}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._path(relative), recursive=True)

    # objects

    def object_key(self, digest: Digest) -> str:
        hexdigest = digest.hexdigest
        return f"objects/{digest.algorithm}/{hexdigest[:2]}/{hexdigest[2:]}"

    def object_size(self, digest: Digest) -> int | None:
        return self.size(self.object_key(digest))

    def open_object(self, digest: Digest) -> BinaryIO:
        with self.errors(f"reading object {digest}"):
            return self.fs.open(self._path(self.object_key(digest)), "rb")

    def object_url(self, digest: Digest, expires_s: int) -> str:
        return self.url_of(self.object_key(digest), expires_s)

    def url_of(self, relative: str, expires_s: int) -> str:
        path = self._path(relative)
        if self.is_local:
            return Path(path).resolve().as_uri()
        with self.errors("signing a URL"):
            try:
                return self.fs.sign(path, expiration=expires_s)
            except NotImplementedError:
                return self.fs.unstrip_protocol(path)

    # names

    def name_key(self, name: str) -> str:
        key = name_key(name)
        return f"names/{key[:2]}/{key}.json"

    def create_name(self, record: NameRecord) -> None:
        """Bind a lake name on the remote; FileExistsError if it is bound already."""
        self.create(self.name_key(record.name), record.to_json())

    def read_name(self, name: str) -> NameRecord | None:
        key = self.name_key(name)
        with self.errors(f"reading the record of {name!r}"):
            try:
                record = NameRecord.from_json(self.fs.cat_file(self._path(key)))
            except FileNotFoundError:
                return None
            with contextlib.suppress(FileNotFoundError):
                tomb = key.removesuffix(".json") + ".removed.json"
                return NameRecord.from_json(self.fs.cat_file(self._path(tomb)))
        return record

    def delete_name(self, name: str) -> None:
        """Undo a ``create_name`` of this process that was never journaled."""
        with self.errors(f"undoing {name!r}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(self.name_key(name)))

    def tombstone(self, record: NameRecord) -> None:
        key = self.name_key(record.name).removesuffix(".json") + ".removed.json"
        with contextlib.suppress(FileExistsError):
            self.create(key, record.to_json())

    def name_record_keys(self) -> list[str]:
        """The keys of every name record and tombstone (a paged listing of ``names/``)."""
        with self.errors("listing names"):
            try:
                return sorted(self.fs.find(self._path("names")))
            except FileNotFoundError:
                return []

    def all_name_records(self) -> Iterator[NameRecord]:
        """Every name record: the full, slow reconciliation (one read per name)."""
        keys = self.name_record_keys()
        tombs = {k for k in keys if k.endswith(".removed.json")}
        plain = [k for k in keys if k not in tombs and k.endswith(".json")]
        for start in range(0, len(plain), 1000):
            batch = [
                tomb if (tomb := k.removesuffix(".json") + ".removed.json") in tombs else k
                for k in plain[start : start + 1000]
            ]
            with self.errors("reading names"):
                bodies = self.fs.cat(batch, on_error="raise", **self._batch())
            for body in bodies.values():
                yield NameRecord.from_json(body)

    # the journal

    def append_journal(self, records: list[NameRecord]) -> str | None:
        """Publish ``records`` as one immutable journal segment; returns its key."""
        if not records:
            return None
        now = datetime.now(UTC)
        key = f"journal/{now.strftime(_HOUR)}/{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{_writer_id()}.jsonl"
        body = b"".join(r.to_json() + b"\n" for r in records)
        self.create(key, body)
        _faults.reached("journal-written")
        return key

    def journal_hours(self) -> list[str]:
        """The hour folders of the journal, oldest first (one listing request per 1000 hours)."""
        with self.errors("listing the journal"):
            try:
                entries = self.fs.ls(self._path("journal"), detail=False)
            except FileNotFoundError:
                return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def journal_segments(self, hour: str) -> list[str]:
        with self.errors("listing the journal"):
            try:
                entries = self.fs.ls(self._path(f"journal/{hour}"), detail=False)
            except FileNotFoundError:
                return []
        return sorted(f"journal/{hour}/{e.rsplit('/', 1)[-1]}" for e in entries if e.endswith(".jsonl"))

    def read_segments(self, keys: list[str]) -> dict[str, list[NameRecord]]:
        """Fetch segments concurrently (one request each)."""
        if not keys:
            return {}
        with self.errors("reading the journal"):
            raw = self.fs.cat([self._path(k) for k in keys], on_error="raise", **self._batch())
        by_path = {self._path(k): k for k in keys}
        out: dict[str, list[NameRecord]] = {}
        for path, body in raw.items():
            key = by_path.get(path) or by_path[self.fs._strip_protocol(path)]
            out[key] = [NameRecord.from_json(line) for line in body.splitlines() if line.strip()]
        return out

    # snapshots: every record of the journal hours before a cut-off, in one file

    def write_snapshot(self, cutoff_hour: str, records: Iterable[NameRecord]) -> None:
        body = gzip.compress(b"".join(r.to_json() + b"\n" for r in records), mtime=0)
        with contextlib.suppress(FileExistsError):
            self.create(f"snapshots/{cutoff_hour}.jsonl.gz", body)

    def latest_snapshot(self) -> tuple[str, list[NameRecord]] | None:
        with self.errors("reading snapshots"):
            try:
                entries = sorted(self.fs.ls(self._path("snapshots"), detail=False))
            except FileNotFoundError:
                return None
            snapshots = [e for e in entries if e.endswith(".jsonl.gz")]
            if not snapshots:
                return None
            latest = snapshots[-1]
            body = gzip.decompress(self.fs.cat_file(latest))
        cutoff = latest.rsplit("/", 1)[-1].removesuffix(".jsonl.gz")
        return cutoff, [NameRecord.from_json(line) for line in body.splitlines() if line.strip()]


def hour_of(moment: datetime) -> str:
    return moment.strftime(_HOUR)


def parse_hour(hour: str) -> datetime:
    return datetime.strptime(hour, _HOUR).replace(tzinfo=UTC)


def parallel(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``fn`` over ``items`` on up to ``workers`` threads (a remote's ``transfers``), in order."""
    items = list(items)
    if len(items) <= 1 or workers <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _writer_id() -> str:
    # Unique per segment; the host part only helps a human reading a listing.
    host = "".join(c for c in socket.gethostname() if c.isalnum())[:16] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _local_tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _local_create(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _local_tmp(path)
    tmp.write_bytes(data)
    try:
        os.link(tmp, path)  # fails if the name exists: the write-once arbiter
    finally:
        tmp.unlink(missing_ok=True)


def _local_put(local: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _local_tmp(path)
    try:
        shutil.copyfile(local, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
