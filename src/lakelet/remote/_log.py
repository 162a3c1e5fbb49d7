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
import io
import json
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lakelet.core._batch import batch_size, batched
from lakelet.core._records import MAX_COUNT, parse_json_line, shown
from lakelet.core._streams import Reader
from lakelet.core.errors import CorruptRecordError
from lakelet.remote._remote import Remote
from lakelet.storage._packs import Pack
from lakelet.storage._refs import NameRecord, parse_record
from lakelet.storage._scopes import LAKE
from lakelet.storage._sweeps import Sweep

__all__ = [
    "Entry",
    "FOLDER",
    "Log",
    "SNAPSHOT_EVERY",
    "decode",
    "decode_pieces",
    "encode",
    "entry_key",
    "snapshot_key",
]

FOLDER = 1000  # entries per folder: one listing page on every store
SNAPSHOT_EVERY = 1000  # entries between snapshots: a new machine reads at most ~2 folders after one
_CHUNK = 1 << 16
_MAX_LINE = 64 << 20  # a snapshot line is one record or one pack line (~100 bytes a member)


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
    whole = Entry(seq, [], [], [])
    for piece in decode_pieces(body.splitlines(), seq, where, size=MAX_COUNT):
        whole.records.extend(piece.records)
        whole.packs.extend(piece.packs)
        whole.sweeps.extend(piece.sweeps)
        whole.problems.extend(piece.problems)
    return whole


def decode_pieces(lines: Iterable[bytes], seq: int, where: str, size: int | None = None) -> Iterator[Entry]:
    """``decode`` of ``lines``, in pieces of about ``size`` records or pack members (default
    ``batch_size()``): a body of any size is read holding one piece at a time (a line is
    read whole: one pack line may list more members)."""
    size = size or batch_size()
    piece = Entry(seq, [], [], [])
    count = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if count >= size:
            yield piece
            piece, count = Entry(seq, [], [], []), 0
        count += 1
        try:
            parsed = _parse_line(parse_json_line(line), seq, piece.records[-1] if piece.records else None)
        except CorruptRecordError as e:
            piece.problems.append(f"{where}, line {number}: skipped: {e}")
            continue
        if isinstance(parsed, NameRecord):
            piece.records.append(parsed)
        elif isinstance(parsed, Pack):
            piece.packs.append(parsed)
            count += len(parsed.members)  # a member weighs about what a record does
        else:
            piece.sweeps.append(parsed)
            count += len(parsed.keys)
    yield piece


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

    def entries_after(self, seq: int, listed: dict[int, list[int]] | None = None) -> list[int]:
        """The numbers of every entry above ``seq``, in order: a listing per folder.
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
        return wanted

    def read_entries(self, numbers: list[int]) -> Iterator[Entry]:
        """Entries ``numbers``, in order, in pieces (``decode_pieces``): read a few at a time
        (concurrently, one request each), so that only those few are held at once."""
        for i in range(0, len(numbers), max(1, self.remote.transfers)):
            group = numbers[i : i + max(1, self.remote.transfers)]
            bodies = self.remote.read_many([entry_key(n) for n in group])
            for n in group:
                body = bodies.pop(entry_key(n))
                if body is None:  # listed, yet no file: a folder (or a key deleted) by another writer
                    yield Entry(n, [], [], [], [f"{entry_key(n)} skipped: it holds no file"])
                    continue
                yield from decode_pieces(io.BytesIO(body), n, entry_key(n))  # lines read lazily

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

    def read_snapshot(self, seq: int) -> Iterator[Entry]:
        """Snapshot ``seq``, streamed in pieces (``decode_pieces``). Raises CorruptRecordError
        at its first line that is not valid (a snapshot is a shortcut through the log, so a
        damaged one is not taken at all: the caller applies the pieces in one transaction
        and rolls it back), FileNotFoundError when there is none."""
        key = snapshot_key(seq)
        with self.remote.open_file(key) as raw:
            try:
                for piece in decode_pieces(_gzip_lines(raw, key), seq, key):
                    if piece.problems:
                        raise CorruptRecordError(piece.problems[0], record=key)
                    yield piece
            except zlib.error as e:
                raise CorruptRecordError(
                    f"{key} is not gzip ({type(e).__name__}: {shown(str(e))})", record=key
                ) from None

    def write_snapshot(
        self,
        seq: int,
        records: Iterable[NameRecord],
        packs: Iterable[Pack],
        sweeps: Iterable[Sweep] = (),
        tmp: Path | None = None,
    ) -> None:
        """``sweeps``: those not done by entry ``seq`` (a push after it must still see them).
        Compressed a batch at a time into a temp file in ``tmp`` (default: in memory), so
        that the records need not be held at once."""
        key = snapshot_key(seq)
        with tempfile.TemporaryFile(dir=tmp) as staging:
            with gzip.GzipFile(fileobj=staging, mode="wb", mtime=0) as out:
                out.write(encode((), packs, sweeps))
                for chunk in batched(records):
                    out.write(NameRecord.lines(chunk))
            staging.seek(0)
            body = staging.read()  # compressed: a snapshot takes ~30 bytes a name
        with contextlib.suppress(FileExistsError):  # another machine took the same one: same content
            self.remote.create(key, body)


def _gzip_lines(raw: Reader, key: str) -> Iterator[bytes]:
    """The lines of the gzip stream ``raw``, decompressed 64 KiB at a time (a small body that
    inflates to gigabytes is read no faster than a big one). Raises CorruptRecordError
    when the stream is empty or cut short, or holds a line longer than a record can be."""
    inflate = zlib.decompressobj(wbits=31)  # gzip framing
    pending, started = b"", False
    while chunk := inflate.unconsumed_tail or raw.read(_CHUNK):
        started = True
        pending += inflate.decompress(chunk, _CHUNK)
        *lines, pending = pending.split(b"\n")
        yield from lines
        if len(pending) > _MAX_LINE:
            raise CorruptRecordError(f"{key} holds a line longer than {_MAX_LINE} bytes", record=key)
        if inflate.eof:
            break
    if not started or not inflate.eof:
        raise CorruptRecordError(f"{key} is not whole gzip (empty, or cut short)", record=key)
    if pending:
        yield pending
