"""Name records on disk: the source of truth for which name holds which object.

Write-once (lake) names are appended in segments: one immutable JSON-lines
file per bind, ``names/segments/<seq>.jsonl``, holding every record of that
batch. A segment is written to a temporary file, fsynced and hard-linked to
its sequence number (``link`` fails if the number is taken), so a reader
sees a whole segment or none, and one fsync covers a 10,000-name directory
add where a file per name cost a create, a link and an unlink each.
``_bind`` serializes the binders and keeps the index caught up with the
segments. Lakes written before segments hold one file per name at
``names/<hh>/<sha256(name)>.json``; those are still read.

Mutable (scoped) names keep one file per name, replaced with ``os.replace``.
A removed lake name gets a tombstone file, ``names/<hh>/<key>.removed.json``.
The SQLite index is rebuilt from all of these; the remote holds the same records in its
commit log (``_log``).

Every record read back, here or from a remote, goes through one validating parser
(``parse_record``): a record is checked as strictly as a name is on write, so inner code
never meets a name with '..', a digest that is not one, or a negative size. Readers of
local files skip a bad record and report it (``logging``, and to the caller that asks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any

from lakelet.core._digest import is_digest
from lakelet.core._durable import fsync_dir, publish_file
from lakelet.core._names import MAX_NAME_BYTES, name_key, validate_name
from lakelet.core._records import MAX_COUNT, check_count, parse_json_line, shown
from lakelet.core.errors import CorruptRecordError, InvalidArgumentError, NameExistsError
from lakelet.storage._sweeps import Sweep

__all__ = [
    "NameRecord",
    "PackMembers",
    "RECORD_FORMAT",
    "RefStore",
    "SEGMENTS",
    "SnapshotPiece",
    "check_same_content",
    "check_time",
    "parse_lines",
    "parse_record",
    "parse_shared",
    "utc_now",
]

RECORD_FORMAT = 1
SEGMENTS = "segments"
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # one, not one per record
_quote = encode_basestring_ascii  # how _ENCODER writes a str (ensure_ascii)
_SEGMENT_SUFFIX = ".jsonl"
_FIELDS = frozenset(
    {"format", "scope", "name", "digest", "size", "created_at", "creator", "meta", "removed_at"}
)
_CONTROL = re.compile("[\x00-\x1f\x7f]")  # a creator is printed by `lakelet ls`: no escapes
_LAKE = "lake"  # (storage._scopes.LAKE: that module imports this one)
_log = logging.getLogger("lakelet.records")


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
            "format": RECORD_FORMAT,
            "scope": self.scope,
            "name": self.name,
            "digest": self.digest,
            "size": self.size,
            "created_at": self.created_at,
            "creator": self.creator,
            "meta": self.meta,
        }
        if self.removed_at is not None:
            data["removed_at"] = self.removed_at
        return _ENCODER.encode(data).encode()

    @staticmethod
    def lines(records: list[NameRecord]) -> bytes:
        """``to_json`` of each record, one a line, byte for byte: a segment of 10,000 names
        spent more time in the general encoder than in writing, so the fixed fields are
        placed by hand (sorted, as ``to_json`` sorts them) and a meta dict that the
        records of a batch share is encoded once."""
        metas: dict[int, tuple[dict[str, Any], str]] = {}  # holding the dict keeps its id unique
        out = []
        for r in records:
            meta = metas.get(id(r.meta))
            if meta is None:
                meta = metas[id(r.meta)] = (r.meta, _ENCODER.encode(r.meta))
            removed = "" if r.removed_at is None else f',"removed_at":{_quote(r.removed_at)}'
            out.append(
                f'{{"created_at":{_quote(r.created_at)},"creator":{_quote(r.creator)},'
                f'"digest":{_quote(r.digest)},"format":{RECORD_FORMAT},"meta":{meta[1]},'
                f'"name":{_quote(r.name)}{removed},"scope":{_quote(r.scope)},"size":{int(r.size)}}}\n'
            )
        return "".join(out).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> NameRecord:
        """The record ``raw`` (one JSON object) holds; CorruptRecordError if it is not one."""
        return parse_record(parse_json_line(raw))

    @classmethod
    def from_dict(cls, data: object) -> NameRecord:
        """``parse_record``: CorruptRecordError unless ``data`` is a valid record."""
        return parse_record(data)

    def removed(self, when: str) -> NameRecord:
        return replace(self, removed_at=when)


@dataclass(frozen=True)
class PackMembers:
    """Members of one pack, as columns (a snapshot holds millions: no object each): the pack's
    digest text, then each member's digest blob (``BLOB_ALGORITHMS``), offset and size."""

    pack: str
    digests: list[bytes]
    offsets: list[int]
    sizes: list[int]


@dataclass(frozen=True)
class SnapshotPiece:
    """A piece of a remote snapshot, every value already validated (``Catalog.load_snapshot``).

    ``shared``: (batch number local to the snapshot, created_at, creator, meta as canonical
    JSON text); the other lists are parallel, one item per name, and a name's batch number
    refers to this piece's ``shared`` or an earlier piece's. A digest is a 33-byte blob, as
    the index stores it (``BLOB_ALGORITHMS``): no text made to be turned back into bytes.
    """

    shared: list[tuple[int, str, str, str]]
    scopes: list[str]
    names: list[str]
    digests: list[bytes]
    sizes: list[int]
    batches: list[int]
    removed_at: list[str | None]
    packs: list[PackMembers]
    sweeps: list[Sweep]
    # where the remote keeps each name's content, if in a pack: (pack digest, offset; the
    # member's size is the name's), one per name; empty when the snapshot does not say
    located: list[tuple[str, int] | None] = field(default_factory=list)


def parse_record(data: object, previous: NameRecord | None = None) -> NameRecord:
    """The one validating parser of a name record (``NameRecord.to_json``), wherever it was read.

    The name passes the rules it passed when bound (``validate_name``), the scope is 'lake' or
    a valid user or pipeline scope, the digest is strict (it chooses a path), the size an int
    in [0, 2**63), the times ISO 8601, the creator a line of text, meta a JSON object.
    Raises CorruptRecordError saying what is wrong.

    ``previous``: the record read before it in the same body. The records of one batch share
    one meta, as they were written: an equal meta is taken from it, so that indexing them
    encodes it once (``Catalog``) rather than once per record.
    """
    if not isinstance(data, dict):
        raise CorruptRecordError(f"a name record is a JSON object, not {type(data).__name__}")
    if not _FIELDS.issuperset(data):
        raise CorruptRecordError(f"unknown fields in a name record: {shown(sorted(data.keys() - _FIELDS))}")
    if data.get("format", RECORD_FORMAT) != RECORD_FORMAT:
        raise CorruptRecordError(f"a name record of unknown format {shown(data['format'])}")
    try:
        scope, name, digest = data["scope"], data["name"], data["digest"]
        size, created_at, creator = data["size"], data["created_at"], data["creator"]
    except KeyError as e:
        raise CorruptRecordError(f"a name record without {e.args[0]!r}") from None
    meta = data.get("meta", {})
    removed_at = data.get("removed_at")
    if not isinstance(name, str) or len(name) > MAX_NAME_BYTES:  # (its message quotes it whole)
        raise CorruptRecordError(f"name {shown(name)} is not a string of at most {MAX_NAME_BYTES} bytes")
    try:
        if scope != _LAKE:
            _check_scope(scope)
        validate_name(name)
    except InvalidArgumentError as e:  # InvalidNameError is one
        raise CorruptRecordError(str(e)) from None
    if not is_digest(digest):
        raise CorruptRecordError(f"not a digest: {shown(digest)}")
    if type(size) is not int or not 0 <= size <= MAX_COUNT:  # (check_count, its message made on failure)
        check_count(size, f"the size of {name!r}")
    _check_time(created_at, "created_at", name)
    if removed_at is not None:
        _check_time(removed_at, "removed_at", name)
    if not isinstance(creator, str) or _CONTROL.search(creator):
        raise CorruptRecordError(f"creator {shown(creator)} of {name!r} is not a line of text")
    if not isinstance(meta, dict):
        raise CorruptRecordError(f"meta of {name!r} is not a JSON object")
    if previous is not None and meta == previous.meta:
        meta = previous.meta
    return NameRecord(scope, name, digest, size, created_at, creator, meta, removed_at)


_SHARED_FIELDS = frozenset({"created_at", "creator", "meta"})


def parse_shared(data: object) -> tuple[str, str, dict[str, Any]]:
    """The one validating parser of the facts a batch of records shares (a compact log's batch
    line, a snapshot's batch row): (created_at, creator, meta), checked by ``parse_record``'s
    rules. Raises CorruptRecordError saying what is wrong."""
    if not isinstance(data, dict) or data.keys() != _SHARED_FIELDS:
        raise CorruptRecordError(
            "a batch is an object of created_at, creator and meta, not "
            f"{shown(sorted(data) if isinstance(data, dict) else data)}"
        )
    created_at, creator, meta = data["created_at"], data["creator"], data["meta"]
    _check_time(created_at, "created_at", "a batch")
    if not isinstance(creator, str) or _CONTROL.search(creator):
        raise CorruptRecordError(f"creator {shown(creator)} of a batch is not a line of text")
    if not isinstance(meta, dict):
        raise CorruptRecordError("meta of a batch is not a JSON object")
    return created_at, creator, meta


def _check_scope(scope: object) -> None:
    # imported here: storage._scopes imports this module (for RefStore)
    from lakelet.storage._scopes import parse_scope

    if not isinstance(scope, str) or len(scope) > 300:  # a user or run id is one 255-byte segment
        raise CorruptRecordError(f"scope {shown(scope)} is not a scope")
    parse_scope(scope)


def check_time(value: object, what: str, name: str) -> None:
    """CorruptRecordError unless ``value`` (``what`` of ``name``) is an ISO 8601 time."""
    _check_time(value, what, name)


def _check_time(value: object, what: str, name: str) -> None:
    try:
        datetime.fromisoformat(value)  # type: ignore[arg-type]  # checked: TypeError below
    except (TypeError, ValueError):
        raise CorruptRecordError(f"{what} {shown(value)} of {name!r} is not an ISO 8601 time") from None


def parse_lines(raw: bytes, where: str) -> tuple[list[NameRecord], list[str]]:
    """The records of a JSON-lines body (a name segment), and one problem line per line that
    is not a valid record (skipped). For readers that keep the rest usable; ``fsck`` may
    quarantine what they skip."""
    records: list[NameRecord] = []
    problems: list[str] = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(parse_record(parse_json_line(line), records[-1] if records else None))
        except CorruptRecordError as e:
            problems.append(f"{where}, line {number}: skipped: {e}")
    return records, problems


def _report(problems: list[str]) -> None:
    for problem in problems:
        _log.warning("%s", problem)


class RefStore:
    """The name records of one scope."""

    def __init__(
        self, directory: Path, tmp_dir: Path, before_first_segment: Callable[[], None] | None = None
    ) -> None:
        self.directory = directory
        self._tmp_dir = tmp_dir
        self._before_first_segment = before_first_segment

    def path(self, name: str) -> Path:
        key = name_key(name)
        return self.directory / key[:2] / f"{key}.json"

    def _tombstone_path(self, name: str) -> Path:
        return self.path(name).with_suffix(".removed.json")

    def read(self, name: str) -> NameRecord | None:
        """The record of ``name`` from its own file: its tombstone if it was force-removed,
        else a per-name record. Names bound in segments are found through the index."""
        key = name_key(name)
        # strings, not Paths: a map asks this of each new item, and pathlib interns every part
        stem = os.path.join(self.directory, key[:2], key)
        for path in (f"{stem}.removed.json", f"{stem}.json"):
            with contextlib.suppress(FileNotFoundError):
                record = _read_record_file(path)
                if record is not None:
                    return record
        return None

    # segments (write-once names)

    def segment_path(self, seq: int) -> Path:
        # zero-padded so that a listing sorts in binding order
        return self.directory / SEGMENTS / f"{seq:012d}{_SEGMENT_SUFFIX}"

    def read_segment(self, seq: int) -> list[NameRecord] | None:
        """The records of segment ``seq``, or None if no segment has that number yet. A line
        that is not a valid record is skipped and reported (``logging``)."""
        path = self.segment_path(seq)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        records, problems = parse_lines(raw, str(path))
        _report(problems)
        return records

    def last_segment(self) -> int:
        """The highest segment number on disk (0 when there is none)."""
        try:
            entries = os.listdir(self.directory / SEGMENTS)
        except FileNotFoundError:
            return 0
        numbers = [
            int(e[: -len(_SEGMENT_SUFFIX)])
            for e in entries
            if e.endswith(_SEGMENT_SUFFIX) and e[: -len(_SEGMENT_SUFFIX)].isdigit()
        ]
        return max(numbers, default=0)

    def append_segment(self, seq: int, records: list[NameRecord], durable: bool = True) -> None:
        """Publish ``records`` as segment ``seq``, durably unless not ``durable`` (stage outputs,
        which a power cut may lose: docs/local-layout.md). Raises FileExistsError if ``seq``
        is taken. Callers hold the bind lock (see ``_bind``)."""
        final = self.segment_path(seq)
        if not final.parent.is_dir():  # the lake's first segment
            if self._before_first_segment is not None:
                self._before_first_segment()
            final.parent.mkdir(parents=True, exist_ok=True)
            for directory in (self.directory, self.directory.parent):  # their new entries, durable
                fsync_dir(directory)
        # One fsync of the whole batch, before it can be seen: the objects it names were
        # synced before this is called, so once linked every name in it is durable.
        publish_file(
            final, NameRecord.lines(records), self._tmp_dir, mode=0o444, point="segment-written", sync=durable
        )

    def put(self, record: NameRecord) -> NameRecord | None:
        """Bind or rebind a mutable name; returns the record it replaced."""
        previous = self.read(record.name)
        publish_file(self.path(record.name), record.to_json(), self._tmp_dir, replace=True, mode=0o444)
        return previous

    def delete(self, name: str) -> NameRecord | None:
        previous = self.read(name)
        self.path(name).unlink(missing_ok=True)
        return previous

    def tombstone(self, record: NameRecord) -> None:
        """Mark a write-once name removed; its record (and lineage) stays."""
        with contextlib.suppress(FileExistsError):
            publish_file(self._tombstone_path(record.name), record.to_json(), self._tmp_dir, mode=0o444)

    def set_aside_invalid(self, keep: Callable[[Path], None]) -> list[str]:
        """Take out what is not a valid record: a per-name file (or tombstone) that is not one is
        removed, a segment with bad lines (cut mid-line, garbage) is replaced by its valid
        lines. ``keep`` is handed each such file first, to keep a copy. Returns one problem line
        per record taken out. Callers hold the bind lock (``_bind.locked``)."""
        if not self.directory.is_dir():
            return []
        problems: list[str] = []
        for path in sorted(self.directory.glob("*/*.json")):
            try:
                parse_record(parse_json_line(path.read_bytes()))
            except CorruptRecordError as e:
                keep(path)
                path.unlink()
                problems.append(f"{path}: {e}")
        for seq in range(1, self.last_segment() + 1):
            path = self.segment_path(seq)
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            records, bad = parse_lines(raw, str(path))
            if bad:
                keep(path)
                # the number stays taken (readers stop at a gap), now by the valid lines only
                publish_file(path, NameRecord.lines(records), self._tmp_dir, replace=True, mode=0o444)
                problems.extend(bad)
        return problems

    def records(self) -> Iterator[NameRecord]:
        """Every record of the scope, for rebuilding the index: per-name files, then
        segments in binding order, a tombstone replacing the record it removes.
        Unreadable files raise."""
        if not self.directory.is_dir():
            return
        segments = self.directory / SEGMENTS
        prefix_dirs = sorted(p for p in self.directory.iterdir() if p.is_dir() and p != segments)
        tombstones = {
            t.name.removesuffix(".removed.json"): t for d in prefix_dirs for t in d.glob("*.removed.json")
        }
        for prefix_dir in prefix_dirs:
            for entry in sorted(prefix_dir.glob("*.json")):
                if not entry.name.endswith(".removed.json"):
                    record = _read_record_file(entry)
                    if record is not None:
                        yield _unless_removed(record, tombstones)
        for seq in range(1, self.last_segment() + 1):
            for record in self.read_segment(seq) or ():  # a gap: a segment lost by hand
                yield _unless_removed(record, tombstones)


def _read_record_file(path: Path | str) -> NameRecord | None:
    """The record of a one-record file; None (reported) when it is not a valid one."""
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return parse_record(parse_json_line(raw))
    except CorruptRecordError as e:
        _report([f"{path}: skipped: {e}"])
        return None


def _unless_removed(record: NameRecord, tombstones: dict[str, Path]) -> NameRecord:
    tomb = tombstones.get(name_key(record.name))
    removed = _read_record_file(tomb) if tomb is not None else None
    return removed if removed is not None else record


def check_same_content(existing: NameRecord, wanted: NameRecord) -> None:
    if existing.removed_at is not None:
        raise NameExistsError(
            f"{existing.name!r} was removed on {existing.removed_at}; "
            "lake names are never rebound: choose another name",
            name=existing.name,
        )
    if existing.digest != wanted.digest:
        raise NameExistsError(
            f"{existing.name!r} is already bound to other content ({existing.digest}); "
            "lake names are write-once: choose another name",
            name=existing.name,
        )
