"""The remote's commit log: how lake names are bound on a shared remote, and learned from it.

Every change to the lake scope's names is one immutable entry, numbered 1, 2,
3, … at ``log/<seq // 1000, 9 digits>/<seq, 12 digits>.jsonl``. A writer
appends entry n + 1 only after it has applied entries 1..n and checked its
names against them, and it creates the entry with the store's conditional
create: of two writers racing for n + 1 exactly one succeeds; the other learns
the winner's entry, checks its names again and tries n + 2. So a name is bound
by the first entry that holds it, every machine agrees on which entry that is,
and a batch of any number of names is bound by one request.

An entry is JSON lines of two kinds: name records (bindings and tombstones,
``NameRecord.to_json``) and pack lines ``{"pack": digest, "members": [[digest,
offset, size], …]}`` saying where the small objects of those records lie
(``_packs``). Entries are grouped 1,000 to a folder, so learning what changed
after entry n is one listing (one page) of n's folder and one read per new
entry, whatever the size of the lake. ``snapshots/<seq>.jsonl.gz`` holds, in
the same line format, the state after entry ``seq``: a new machine reads the
latest snapshot and the entries after it. A remote gc also writes sweep lines
(``_sweeps``): what it is about to delete, and when it is done.

Any machine with write access writes here, so every line is read through its type's one
validating parser (``decode``). Entries are never rewritten: a bad line would fail every
sync forever, so it is skipped and reported, and the rest of its entry applies. A snapshot
is only a shortcut through the log: one with a bad line, or numbered past the log's last
entry, is refused whole (``_sync`` falls back to an older one, or to the log itself).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from lakelet.core._records import parse_json_line, shown
from lakelet.core.errors import CorruptRecordError
from lakelet.remote._remote import Remote
from lakelet.storage._packs import Pack
from lakelet.storage._refs import NameRecord, parse_record
from lakelet.storage._scopes import LAKE
from lakelet.storage._sweeps import Sweep

__all__ = ["Entry", "FOLDER", "Log", "SNAPSHOT_EVERY", "decode", "encode", "entry_key", "snapshot_key"]

FOLDER = 1000  # entries per folder: one listing page on every store
SNAPSHOT_EVERY = 1000  # entries between snapshots: a new machine reads at most ~2 folders after one


@dataclass(frozen=True)
class Entry:
    """The valid lines of log entry (or snapshot) ``seq``, and one report per line skipped."""

    seq: int
    records: list[NameRecord]
    packs: list[Pack]
    sweeps: list[Sweep]
    problems: list[str] = field(default_factory=list)


def entry_key(seq: int) -> str:
    return f"log/{seq // FOLDER:09d}/{seq:012d}.jsonl"


def snapshot_key(seq: int) -> str:
    return f"snapshots/{seq:012d}.jsonl.gz"


def encode(records: Iterable[NameRecord], packs: Iterable[Pack], sweeps: Iterable[Sweep] = ()) -> bytes:
    # pack lines first: a reader learns where the objects are before the names using them
    lines = [json.dumps(p.to_dict(), separators=(",", ":")).encode() for p in packs]
    lines += [json.dumps(s.to_dict(), separators=(",", ":")).encode() for s in sweeps]
    lines += [r.to_json() for r in records]
    return b"".join(line + b"\n" for line in lines)


def decode(body: bytes, seq: int, where: str) -> Entry:
    """The lines of entry (or snapshot) ``seq``, read from ``where``: each parsed by the one
    validating parser of its kind; a line that is none of them is skipped and reported."""
    entry = Entry(seq, [], [], [])
    for number, line in enumerate(body.splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed = _parse_line(parse_json_line(line), seq, entry.records[-1] if entry.records else None)
        except CorruptRecordError as e:
            entry.problems.append(f"{where}, line {number}: skipped: {e}")
            continue
        if isinstance(parsed, NameRecord):
            entry.records.append(parsed)
        elif isinstance(parsed, Pack):
            entry.packs.append(parsed)
        else:
            entry.sweeps.append(parsed)
    return entry


def _entry(body: bytes | None, seq: int) -> Entry:
    if body is None:  # listed, yet no file: a folder (or a key deleted) by another writer
        return Entry(seq, [], [], [], [f"{entry_key(seq)} skipped: it holds no file"])
    return decode(body, seq, entry_key(seq))


def _parse_line(data: object, seq: int, previous: NameRecord | None) -> NameRecord | Pack | Sweep:
    if not isinstance(data, dict):
        raise CorruptRecordError(f"a log line is a JSON object, not {type(data).__name__}")
    if Sweep.is_line(data):  # before "pack": a sweep line has one too (see _sweeps)
        return Sweep.from_dict(data, seq)
    if "pack" in data:
        return Pack.from_dict(data)
    record = parse_record(data, previous)
    if record.scope != LAKE:  # scoped names live under scopes/, never in the log
        raise CorruptRecordError(
            f"the log binds lake names only, not {record.name!r} in scope {record.scope}"
        )
    return record


def _numbers(names: list[str], suffix: str) -> list[int]:
    stems = (n.removesuffix(suffix) for n in names if n.endswith(suffix))
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses
    return sorted({int(s) for s in stems if s.isascii() and s.isdigit()})  # a file and a folder: once


class Log:
    """The commit log and snapshots of one remote."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote

    def append(
        self, seq: int, records: list[NameRecord], packs: list[Pack], sweeps: list[Sweep] | None = None
    ) -> None:
        """Create entry ``seq``; FileExistsError if another writer created it first."""
        self.remote.create(entry_key(seq), encode(records, packs, sweeps or []))

    def entries_after(self, seq: int, listed: dict[int, list[int]] | None = None) -> list[Entry]:
        """Every entry numbered above ``seq``, in order: a listing per folder, a read per entry.
        ``listed``: folder listings already made (``holds``), reused rather than repeated."""
        listed = {} if listed is None else listed
        wanted: list[int] = []
        folder = (seq + 1) // FOLDER
        while True:
            numbers = self._folder(folder, listed)
            wanted += [n for n in numbers if n > seq]
            if not numbers or numbers[-1] != folder * FOLDER + FOLDER - 1:
                break  # the folder is not full: nothing has been written past it
            folder += 1
        bodies = self.remote.read_many([entry_key(n) for n in wanted])
        return [_entry(bodies[entry_key(n)], n) for n in wanted]

    def holds(self, seq: int, listed: dict[int, list[int]]) -> bool:
        """Whether entry ``seq`` exists (one listing of its folder, kept in ``listed``)."""
        return seq in self._folder(seq // FOLDER, listed)

    def _folder(self, folder: int, listed: dict[int, list[int]]) -> list[int]:
        if folder not in listed:
            numbers = _numbers(self.remote.list_dir(f"log/{folder:09d}"), ".jsonl")
            # an entry is read at entry_key(n): a number in another folder names no key
            listed[folder] = [n for n in numbers if n // FOLDER == folder]
        return listed[folder]

    def snapshots(self) -> list[int]:
        """The numbers of the entries the snapshots were taken after, oldest first."""
        return _numbers(self.remote.list_dir("snapshots"), ".jsonl.gz")

    def read_snapshot(self, seq: int) -> Entry:
        """Snapshot ``seq``, whole: CorruptRecordError if any line of it is not valid (a
        snapshot is a shortcut through the log, so a damaged one is not taken at all)."""
        key = snapshot_key(seq)
        body = self.remote.read_bytes(key)
        if body is None:
            raise FileNotFoundError(key)
        try:
            text = gzip.decompress(body)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
            raise CorruptRecordError(
                f"{key} is not gzip ({type(e).__name__}: {shown(str(e))})", record=key
            ) from None
        snapshot = decode(text, seq, key)
        if snapshot.problems:
            raise CorruptRecordError(snapshot.problems[0], record=key)
        return snapshot

    def write_snapshot(
        self, seq: int, records: Iterable[NameRecord], packs: Iterable[Pack], sweeps: Iterable[Sweep] = ()
    ) -> None:
        """``sweeps``: those not done by entry ``seq`` (a push after it must still see them)."""
        body = gzip.compress(encode(records, packs, sweeps), mtime=0)
        with contextlib.suppress(FileExistsError):  # another machine took the same one: same content
            self.remote.create(snapshot_key(seq), body)
