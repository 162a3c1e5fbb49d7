"""The remote: a lake's shared, authoritative copy in any fsspec store.

This module only moves bytes: the format marker, conditional creates, uploads,
ranged reads and listings, and where objects live (``objects/`` for loose ones,
``packs/`` for small ones sent together, see ``_packs``). What the keys mean is
``_log``'s (names) and ``_sync``'s (what to move) business; the layout is
documented in docs/remote-layout.md.

Every store error surfaces as ``RemoteError`` naming the remote and the
cause, except the two outcomes callers act on: ``FileExistsError`` from a
conditional create and ``FileNotFoundError`` from a read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from lakelet.core._digest import Digest
from lakelet.core._durable import publish_file
from lakelet.core._streams import Reader
from lakelet.core.errors import ConfigError, LakeletError, RemoteError

__all__ = ["MARKER", "OLDEST_FORMAT", "R", "REMOTE_FORMAT", "Remote", "T", "parallel"]

# 2: names are bound by a numbered commit log, small objects travel in packs (format 1
# had one record per name under names/ and a journal stamped by the writers' clocks).
# 3: the compact log: entries compressed, the facts of a batch written once, snapshots in
# Parquet shards. Format 2 is still read, and written on a remote whose marker says 2, until
# `lakelet remote upgrade` switches it.
REMOTE_FORMAT = 3
OLDEST_FORMAT = 2
MARKER = "lakelet-remote.json"

_LOCAL_PROTOCOLS = {"file", "local"}
T = TypeVar("T")
R = TypeVar("R")
_EXPECTED = (FileExistsError, FileNotFoundError)
_NO_FILE = (FileNotFoundError, IsADirectoryError, NotADirectoryError)  # a key that holds no file


class Remote:
    """One remote lake root, e.g. ``s3://bucket/team-lake``."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None, transfers: int = 16) -> None:
        self.url = url.rstrip("/")
        self.transfers = transfers  # concurrent requests; object stores reward parallel small transfers
        import fsspec  # ~40 ms: paid only by commands that reach a remote

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
        # s3fs reads a whole object of unknown size with a HEAD first (to split a big one over
        # several GETs): for the log's entries and markers, all small, one GET is the read
        self._small_read = {"max_concurrency": 1} if "s3" in protocols else {}
        # what its marker says, once check_format has read it; until then, what every reader reads
        self.format = OLDEST_FORMAT

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
            raise RemoteError(f"remote {self.url}: {doing} failed: {_first_line(e)}", url=self.url) from e

    @contextlib.contextmanager
    def _no_bucket(self) -> Iterator[None]:
        # A write that finds nothing to write into means the bucket (or container) is missing.
        try:
            yield
        except FileNotFoundError as e:
            if self.is_local:  # a folder, not a bucket: say which path is missing
                raise RemoteError(
                    f"remote {self.url}: cannot write {e.filename or self.root}: {e.strerror or e}",
                    url=self.url,
                ) from None
            raise RemoteError(
                f"remote {self.url}: its bucket or container does not exist ({_first_line(e)})", url=self.url
            ) from None

    def _batch(self) -> dict[str, int]:
        # async filesystems (s3fs, gcsfs, adlfs) run batches concurrently
        return {"batch_size": self.transfers} if getattr(self.fs, "async_impl", False) else {}

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}" if self.root else relative

    # the format marker

    def check_format(self, create: bool) -> None:
        """Read (or, when ``create``, write) the format marker at the remote root."""
        marker = self.path(MARKER)
        with self.errors("reading the format marker"):
            try:
                data = json.loads(self.fs.cat_file(marker, **self._small_read))
            except FileNotFoundError:
                if not create:
                    raise RemoteError(
                        f"remote {self.url} holds no lake (no {MARKER}): "
                        f"create it with `lakelet init PATH --remote {self.url}`",
                        url=self.url,
                    ) from None
                self._create_marker()
                data = {"format": REMOTE_FORMAT}  # (or another machine's, of the same format)
        found = data.get("format", 0) if isinstance(data, dict) else None
        if not isinstance(found, int) or isinstance(found, bool):
            raise RemoteError(
                f"remote {self.url}: its format marker {MARKER} is damaged (no integer format)", url=self.url
            )
        if found > REMOTE_FORMAT:
            raise RemoteError(
                f"remote {self.url} has format {found}, newer than this lakelet "
                f"understands ({REMOTE_FORMAT}): upgrade lakelet",
                url=self.url,
            )
        if found < OLDEST_FORMAT:
            raise RemoteError(
                f"remote {self.url} has format {found}, written by an older lakelet; this one "
                f"reads formats {OLDEST_FORMAT} and {REMOTE_FORMAT} only: push the lake from a local "
                "copy to a new remote",
                url=self.url,
            )
        self.format = found

    def upgrade_format(self) -> bool:
        """Switch the marker to REMOTE_FORMAT (from then on every machine writes it; a lakelet
        that reads only an older format refuses the remote). Returns whether it changed."""
        self.check_format(create=False)
        if self.format == REMOTE_FORMAT:
            return False
        with self.errors("writing the format marker"):
            self.put_bytes(MARKER, _marker(REMOTE_FORMAT))
        self.format = REMOTE_FORMAT
        return True

    def _create_marker(self) -> None:
        body = _marker(REMOTE_FORMAT)
        try:
            self.create(MARKER, body)
        except FileExistsError:
            return  # another machine initialised it first
        # Every name binding relies on the conditional create (docs/remote-layout.md): a
        # store that ignores it would let two writers take one log entry and lose one.
        try:
            self.create(MARKER, body)
        except FileExistsError:
            return
        raise RemoteError(
            f"remote {self.url} ignores conditional creates (If-None-Match / "
            "ifGenerationMatch=0): lakelet cannot bind names safely on it",
            url=self.url,
        )

    # primitive writes: no reader ever sees a partial file

    def create(self, relative: str, data: bytes) -> None:
        """Write ``data`` at ``relative`` only if nothing is there; FileExistsError otherwise."""
        path = self.path(relative)
        with self.errors(f"creating {relative}"), self._no_bucket():
            if self.is_local:
                self._local_publish(path, data, replace=False)
                return
            # S3 If-None-Match: *, GCS ifGenerationMatch=0, Azure If-None-Match: *
            self.fs.pipe_file(path, data, mode="create")

    def upload(self, local: Path, relative: str) -> None:
        """Copy a local file to ``relative``, replacing it atomically if it exists."""
        path = self.path(relative)
        with self.errors(f"uploading {relative}"), self._no_bucket():
            if self.is_local:
                self._local_publish(path, local, replace=True)
            else:
                self.fs.put_file(str(local), path)  # object stores publish on completion only

    # plain files, for the scoped stores (see _scoped_remote)

    def put_bytes(self, relative: str, data: bytes) -> None:
        """Write ``data`` at ``relative``, replacing it atomically."""
        path = self.path(relative)
        with self.errors(f"writing {relative}"), self._no_bucket():
            if self.is_local:
                self._local_publish(path, data, replace=True)
            else:
                self.fs.pipe_file(path, data)

    def _local_publish(self, path: str, content: bytes | Path, replace: bool) -> None:
        # Temp files go in the remote's own tmp/, on its filesystem, where no listing looks:
        # one beside its key, left by a writer that was killed, would be listed with the keys
        # (read back as a run log, reported by gc --remote as an object).
        tmp_dir = Path(self.path("tmp"))
        tmp_dir.mkdir(parents=True, exist_ok=True)
        publish_file(Path(path), content, tmp_dir, replace=replace, point="remote-file-written")

    def read_bytes(self, relative: str, start: int | None = None, end: int | None = None) -> bytes | None:
        """The bytes at ``relative`` (or [start, end) of them); None if there is nothing."""
        with self.errors(f"reading {relative}"):
            try:
                small = self._small_read if start is None and end is None else {}
                data: bytes = self.fs.cat_file(self.path(relative), start=start, end=end, **small)
            except FileNotFoundError:
                return None
            except OSError:
                # a range from the object's end or past it (any range of an empty object): S3
                # answers 416 where a file gives b""
                size = self.size(relative) if start is not None else None
                if size is None or start is None or start < size:
                    raise
                return b""
            return data

    def open_file(self, relative: str) -> Reader:
        with self.errors(f"reading {relative}"):
            file: Reader = self.fs.open(self.path(relative), "rb")
            return file

    def read_many(self, keys: list[str]) -> dict[str, bytes | None]:
        """The bytes of each key, fetched concurrently (one request each); None for a key that
        holds no file (gone since it was listed, or a folder: any writer can make one)."""
        if not keys:
            return {}
        doing = f"reading {keys[0].rsplit('/', 1)[0]}"
        with self.errors(doing):
            raw = self.fs.cat(
                [self.path(k) for k in keys], on_error="return", **self._batch(), **self._small_read
            )
        by_path = {self.path(k): k for k in keys}
        out: dict[str, bytes | None] = {}
        for path, body in raw.items():
            key = by_path.get(path) or by_path[self.fs._strip_protocol(path)]  # noqa: SLF001 - fsspec's normalizer
            if isinstance(body, _NO_FILE):
                out[key] = None
            elif isinstance(body, BaseException):
                with self.errors(doing):
                    raise body
            else:
                out[key] = body
        return out

    def size(self, relative: str) -> int | None:
        """The size of the key at ``relative``; None if there is nothing."""
        with self.errors(f"checking {relative}"):
            try:
                return int(self.fs.size(self.path(relative)))
            except FileNotFoundError:
                return None

    def list_dir(self, relative: str) -> list[str]:
        """The names of the entries directly under ``relative`` (one listing page per 1,000)."""
        with self.errors(f"listing {relative}"):
            try:
                entries = self.fs.ls(self.path(relative), detail=False)
            except FileNotFoundError:
                return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def find(self, prefix: str) -> list[str]:
        """Keys (relative to the remote root) that start with ``prefix``."""
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        with self.errors(f"listing {directory or 'the remote'}"):
            try:
                found = self.fs.find(self.path(directory))
            except FileNotFoundError:
                return []
        root = f"{self.root}/" if self.root else ""
        # fsspec's own path normalizer: the one way to map what find() returns back to keys
        keys = (self.fs._strip_protocol(k).removeprefix(root) for k in found)  # noqa: SLF001
        return [k for k in keys if k.startswith(prefix)]

    def remove(self, relative: str) -> None:
        with self.errors(f"deleting {relative}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(relative))

    def remove_tree(self, relative: str) -> None:
        with self.errors(f"deleting {relative}"), contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(relative), recursive=True)

    # objects

    def object_key(self, digest: Digest) -> str:
        hexdigest = digest.hexdigest
        return f"objects/{digest.algorithm}/{hexdigest[:2]}/{hexdigest[2:]}"

    def object_size(self, digest: Digest) -> int | None:
        return self.size(self.object_key(digest))

    def open_object(self, digest: Digest) -> Reader:
        with self.errors(f"reading object {digest}"):
            file: Reader = self.fs.open(self.path(self.object_key(digest)), "rb")
            return file

    def url_of(self, relative: str, expires_s: int) -> str:
        path = self.path(relative)
        if self.is_local:
            return Path(path).resolve().as_uri()
        with self.errors("signing a URL"):
            try:
                url: str = self.fs.sign(path, expiration=expires_s)
            except NotImplementedError:
                url = self.fs.unstrip_protocol(path)
            return url


def _marker(version: int) -> bytes:
    return json.dumps({"format": version, "layout": "docs/remote-layout.md"}).encode()


def parallel(fn: Callable[[T], R], items: Iterable[T], workers: int) -> list[R]:
    """``fn`` over ``items`` on up to ``workers`` threads (a remote's ``transfers``), in order."""
    items = list(items)
    if len(items) <= 1 or workers <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
