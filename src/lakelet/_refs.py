"""Name records on disk: the source of truth for which name holds which object.

One small JSON file per name, at ``names/<hh>/<sha256(name)>.json``. A
write-once name is bound by hard-linking a complete temporary file to that
path: ``link`` fails if the path exists, so exactly one of two racing
writers wins and nobody ever sees a partial record. Mutable (scoped) names
are replaced with ``os.replace``. The SQLite index is rebuilt from these
files; the remote holds the same records in its commit log (``_log``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import _faults
from ._errors import NameExistsError
from ._names import name_key
from ._objects import fsync_dir, new_temp_path

RECORD_FORMAT = 1


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class NameRecord:
    """A name bound to an object, with who bound it and when."""

    scope: str
    name: str
    digest: str
    size: int
    created_at: str
    creator: str
    meta: dict[str, Any] = field(default_factory=dict)
    removed_at: str | None = None

    def to_json(self) -> bytes:
        data = {
            "format": RECORD_FORMAT, "scope": self.scope, "name": self.name, "digest": self.digest,
            "size": self.size, "created_at": self.created_at, "creator": self.creator, "meta": self.meta,
        }
        if self.removed_at is not None:
            data["removed_at"] = self.removed_at
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> NameRecord:
        return cls.from_dict(json.loads(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NameRecord:
        data = dict(data)
        data.pop("format", None)
        return cls(**data)

    def removed(self, when: str) -> NameRecord:
        return replace(self, removed_at=when)


class RefStore:
    """The name records of one scope."""

    def __init__(self, directory: Path, tmp_dir: Path) -> None:
        self.directory = directory
        self._tmp_dir = tmp_dir

    def path(self, name: str) -> Path:
        key = name_key(name)
        return self.directory / key[:2] / f"{key}.json"

    def _tombstone_path(self, name: str) -> Path:
        return self.path(name).with_suffix(".removed.json")

    def read(self, name: str) -> NameRecord | None:
        """The record bound to ``name`` (with ``removed_at`` if it was force-removed)."""
        try:
            record = NameRecord.from_json(self.path(name).read_bytes())
        except FileNotFoundError:
            return None
        with contextlib.suppress(FileNotFoundError):
            return NameRecord.from_json(self._tombstone_path(name).read_bytes())
        return record

    def _write_temp(self, record: NameRecord, durable: bool) -> Path:
        tmp = new_temp_path(self._tmp_dir)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            os.write(fd, record.to_json())
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        return tmp

    def bind_once(self, record: NameRecord, *, durable: bool = True) -> tuple[NameRecord, bool]:
        """Bind a write-once name. Returns (the bound record, whether this call created it).

        Binding the same digest again is a no-op that returns the first record;
        a different digest raises NameExistsError.
        """
        final = self.path(record.name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._write_temp(record, durable)
        try:
            os.link(tmp, final)
        except FileExistsError:
            existing = self.read(record.name)
            assert existing is not None
            check_same_content(existing, record)
            return existing, False
        finally:
            tmp.unlink(missing_ok=True)
        if durable:
            fsync_dir(final.parent)
        _faults.reached("ref-bound")
        return record, True

    def unbind_created(self, name: str) -> None:
        """Undo a ``bind_once`` of this process whose batch failed before it was published."""
        self.path(name).unlink(missing_ok=True)

    def put(self, record: NameRecord) -> NameRecord | None:
        """Bind or rebind a mutable name; returns the record it replaced."""
        final = self.path(record.name)
        previous = self.read(record.name)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self._write_temp(record, durable=True), final)
        fsync_dir(final.parent)
        return previous

    def delete(self, name: str) -> NameRecord | None:
        previous = self.read(name)
        self.path(name).unlink(missing_ok=True)
        return previous

    def tombstone(self, record: NameRecord) -> None:
        """Mark a write-once name removed; its record (and lineage) stays."""
        final = self._tombstone_path(record.name)
        tmp = self._write_temp(record, durable=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)

    def records(self) -> Iterator[NameRecord]:
        """Every record of the scope, for rebuilding the index. Unreadable files raise."""
        if not self.directory.is_dir():
            return
        for prefix_dir in sorted(self.directory.iterdir()):
            for entry in sorted(prefix_dir.glob("*.json")):
                if entry.name.endswith(".removed.json"):
                    continue
                record = NameRecord.from_json(entry.read_bytes())
                tomb = entry.with_suffix(".removed.json")
                if tomb.exists():
                    record = NameRecord.from_json(tomb.read_bytes())
                yield record


def check_same_content(existing: NameRecord, wanted: NameRecord) -> None:
    if existing.removed_at is not None:
        raise NameExistsError(
            f"{existing.name!r} was removed on {existing.removed_at}; "
            "lake names are never rebound: choose another name"
        )
    if existing.digest != wanted.digest:
        raise NameExistsError(
            f"{existing.name!r} is already bound to other content ({existing.digest}); "
            "lake names are write-once: choose another name"
        )
