"""Mirrored files: small records kept under the lake root and, with a remote, under the same key there.

Bookmarks, run logs, run reports and dataset manifests are each one small
file that every machine sharing the remote must see. The remote is written
first (it is the source of truth: a failure there changes nothing here), then
the local copy is published durably (``publish_file``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from lakelet.core._durable import publish_file

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["MirroredFiles"]

T = TypeVar("T")


def _as_is(data: bytes, copy: str) -> bytes:
    return data


class MirroredFiles:
    """Keys relative to the lake root (``state/p/state.json``) and to the remote's."""

    def __init__(self, context: LakeContext) -> None:
        self._context = context

    def local_path(self, key: str) -> Path:
        return self._context.root / key

    def read(self, key: str, prefer_local: bool = False, limit: int | None = None) -> bytes | None:
        """The remote's bytes when there is a remote (another machine may have replaced them),
        else the local copy's; None if there is none. ``prefer_local``: the local copy when
        there is one (a file only its writer replaces), the remote's otherwise. ``limit``: read
        at most one byte more than that, so that a caller can refuse a file too large without
        holding it (a peer may have written any size)."""
        local = self.local_path(key)
        if prefer_local and local.is_file():
            return _read_local(local, limit)
        syncer = self._context.syncer()
        if syncer is not None:
            start, end = (0, limit + 1) if limit is not None else (None, None)
            data = syncer.remote.read_bytes(key, start, end)
            if data is not None:
                return data
        return _read_local(local, limit) if local.is_file() else None

    @overload
    def read_immutable(self, key: str, point: str | None = None) -> bytes | None: ...

    @overload
    def read_immutable(
        self, key: str, point: str | None = None, *, parse: Callable[[bytes, str], T]
    ) -> T | None: ...

    def read_immutable(
        self, key: str, point: str | None = None, *, parse: Callable[[bytes, str], Any] | None = None
    ) -> Any:
        """A write-once file: the local copy, else the remote's, kept here read-only from now
        on; None if there is none. With ``parse``, what ``parse(data, copy)`` makes of it
        (``copy``: "local copy" or "on the remote", for its errors): a remote copy is kept only
        once it parsed, so a bad one raises what ``parse`` raised and leaves nothing here."""
        if parse is None:
            parse = _as_is
        local = self.local_path(key)
        if local.is_file():
            return parse(local.read_bytes(), "local copy")
        syncer = self._context.syncer()
        data = syncer.remote.read_bytes(key) if syncer is not None else None
        if data is None:
            return None
        parsed = parse(data, "on the remote")  # first: a peer's bad record is never kept here
        # a copy that is there already is the remote's too: keys are written once
        with contextlib.suppress(FileExistsError):
            publish_file(local, data, self._context.tmp, mode=0o444, point=point)
        return parsed

    def replace(self, key: str, data: bytes, point: str | None = None, local_first: bool = False) -> None:
        """Write ``data`` under ``key``, replacing what was there, on the remote and here.
        ``local_first``: here first, for a record of work done here that must be kept even
        when the remote cannot be reached."""
        syncer = self._context.syncer()
        if syncer is not None and not local_first:
            syncer.remote.put_bytes(key, data)
        publish_file(self.local_path(key), data, self._context.tmp, replace=True, point=point)
        if syncer is not None and local_first:
            syncer.remote.put_bytes(key, data)

    def create(self, key: str, data: bytes, point: str | None = None, read_only: bool = False) -> bool:
        """Write ``data`` under ``key`` only if no one has: False if another writer got there first
        (on the remote, the store's conditional create decides between machines)."""
        syncer = self._context.syncer()
        if syncer is not None:
            try:
                syncer.remote.create(key, data)
            except FileExistsError:
                return False
        local = self.local_path(key)
        try:
            publish_file(local, data, self._context.tmp, mode=0o444 if read_only else 0o666, point=point)
        except FileExistsError:
            # with a remote, ours won there; a local copy with the same bytes is ours too
            return syncer is not None and local.read_bytes() == data
        return True

    def keys(
        self, prefix: str, suffix: str = "", recursive: bool = False, remote_only: bool = False
    ) -> list[str]:
        """The keys in folder ``prefix`` (ending in '/') whose names end in ``suffix``, here or on
        the remote, sorted; ``recursive``: in its subfolders too; ``remote_only``: with a remote,
        only its keys (the files are written there first)."""
        syncer = self._context.syncer()
        folder = self.local_path(prefix)
        pattern = f"**/*{suffix}" if recursive else f"*{suffix}"
        found = (
            {p.relative_to(self._context.root).as_posix() for p in folder.glob(pattern) if p.is_file()}
            if folder.is_dir() and not (remote_only and syncer is not None)
            else set()
        )
        if syncer is not None:
            found.update(
                k
                for k in syncer.remote.find(prefix)
                if k.endswith(suffix) and (recursive or "/" not in k[len(prefix) :])
            )
        return sorted(found)


def _read_local(path: Path, limit: int | None) -> bytes:
    with open(path, "rb") as f:
        return f.read(-1 if limit is None else limit + 1)
