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
(``_packs``). On a remote of format 3 the body is zstd-compressed and a record is a batch
line (the time, creator and meta of an add, once) and a short line per name under it.
Entries are grouped 1,000 to a folder, so learning what changed
after entry n is one listing (one page) of n's folder and one read per new
entry, whatever the size of the lake. A snapshot holds the state after entry ``seq``:
``snapshots/<seq>/`` Parquet shards (format 3, ``_snapshot``) or ``snapshots/<seq>.jsonl.gz``
in the line format (format 2); a new machine reads the
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
from typing import Any

from lakelet.core._batch import batch_size, batched
from lakelet.core._records import MAX_COUNT, parse_json_line, shown
from lakelet.core._streams import Reader
from lakelet.core.errors import CorruptRecordError
from lakelet.remote import _snapshot
from lakelet.remote._remote import Remote
from lakelet.storage._packs import Pack
from lakelet.storage._refs import NameRecord, parse_record, parse_shared
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
    "entry_lines",
    "is_compact",
    "snapshot_key",
    "zstd_compress",
]

FOLDER = 1000  # entries per folder: one listing page on every store
SNAPSHOT_EVERY = 1000  # entries between snapshots: a new machine reads at most ~2 folders after one
_CHUNK = 1 << 16
_MAX_LINE = 64 << 20  # a snapshot line is one record or one pack line (~100 bytes a member)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
# Format 3 compresses an entry with zstd: its window (8 MiB at this level) reaches back over a
# whole entry, so the digest a record line repeats from its pack line costs a few bytes, where
# gzip's 32 KiB window paid for it twice (bench/README.md, "scale")
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_LEVEL = 9
_SHORT_FIELDS = frozenset({"name", "digest", "size", "removed_at"})  # a format-3 record line


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


def encode(
    records: Iterable[NameRecord], packs: Iterable[Pack], sweeps: Iterable[Sweep] = (), compact: bool = False
) -> bytes:
    """An entry's body: format 2's JSON lines, or (``compact``) format 3's, zstd-compressed."""
    # pack lines first: a reader learns where the objects are before the names using them
    lines = [_json(p.to_dict()) for p in packs]
    lines += [_json(s.to_dict()) for s in sweeps]
    if not compact:
        lines += [r.to_json() for r in records]
        return b"".join(line + b"\n" for line in lines)
    lines += _compact_lines(records)
    return zstd_compress(b"".join(line + b"\n" for line in lines))


def _json(data: object) -> bytes:
    return _ENCODER.encode(data).encode()


def _compact_lines(records: Iterable[NameRecord]) -> list[bytes]:
    """A batch line for each run of records sharing their time, creator and meta, and a short
    line per record (its fields the batch line does not give)."""
    lines: list[bytes] = []
    shared: tuple[str, str, dict[str, Any]] | None = None
    for r in records:
        if shared is None or (r.created_at, r.creator) != shared[:2] or not _same(r.meta, shared[2]):
            shared = (r.created_at, r.creator, r.meta)
            lines.append(_json({"batch": {"created_at": r.created_at, "creator": r.creator, "meta": r.meta}}))
        short: dict[str, object] = {"name": r.name, "digest": r.digest, "size": r.size}
        if r.removed_at is not None:
            short["removed_at"] = r.removed_at
        lines.append(_json(short))
    return lines


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a is b or a == b  # the records of one add share one dict


def zstd_compress(body: bytes) -> bytes:
    import pyarrow as pa  # ~0.1 s: paid by what writes or reads format 3 only

    return bytes(pa.Codec("zstd", compression_level=_ZSTD_LEVEL).compress(body, asbytes=True))


def is_compact(head: bytes) -> bool:
    """Whether a body starting with ``head`` is a format-3 (zstd) one."""
    return head.startswith(_ZSTD_MAGIC)


def decode(body: bytes, seq: int, where: str) -> Entry:
    """The lines of entry (or snapshot) ``seq``, read from ``where``: each parsed by the one
    validating parser of its kind; a line that is none of them is skipped and reported."""
    whole = Entry(seq, [], [], [])
    for piece in decode_pieces(
        entry_lines(body, where), seq, where, size=MAX_COUNT, compact=is_compact(body)
    ):
        whole.records.extend(piece.records)
        whole.packs.extend(piece.packs)
        whole.sweeps.extend(piece.sweeps)
        whole.problems.extend(piece.problems)
    return whole


def entry_lines(body: bytes, where: str) -> Iterator[bytes]:
    """The lines of an entry's body, of format 2 or 3 (decompressed 64 KiB at a time)."""
    if is_compact(body):
        import pyarrow as pa

        return _stream_lines(pa.CompressedInputStream(pa.BufferReader(body), "zstd"), where, "zstd")
    return iter(io.BytesIO(body))


def decode_pieces(
    lines: Iterable[bytes], seq: int, where: str, size: int | None = None, compact: bool = False
) -> Iterator[Entry]:
    """``decode`` of ``lines``, in pieces of about ``size`` records or pack members (default
    ``batch_size()``): a body of any size is read holding one piece at a time (a line is
    read whole: one pack line may list more members). ``compact``: format 3's lines, where a
    record line is short and takes the other fields from the batch line above it."""
    size = size or batch_size()
    piece = Entry(seq, [], [], [])
    count = 0
    shared: _Shared | None = None
    orphans = False  # the records under a bad batch line: skipped with it, reported once
    previous: NameRecord | None = None
    try:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if count >= size:
                yield piece
                piece, count = Entry(seq, [], [], []), 0
            count += 1
            try:
                data = parse_json_line(line)
                if compact and isinstance(data, dict) and "batch" in data:
                    shared, orphans = None, True
                    shared, orphans = _parse_batch_line(data), False
                    continue
                if orphans and isinstance(data, dict) and "pack" not in data:
                    continue
                parsed = _parse_line(data, seq, previous, compact, shared)
            except CorruptRecordError as e:
                under = " with the records under it" if orphans and shared is None and _is_batch(line) else ""
                piece.problems.append(f"{where}, line {number}: skipped{under}: {e}")
                continue
            if isinstance(parsed, NameRecord):
                piece.records.append(parsed)
                previous = parsed
            elif isinstance(parsed, Pack):
                piece.packs.append(parsed)
                count += len(parsed.members)  # a member weighs about what a record does
            else:
                piece.sweeps.append(parsed)
                count += len(parsed.keys)
    except CorruptRecordError as e:  # the body itself: not zstd, cut short, a line too long
        piece.problems.append(f"{where}: the rest skipped: {e}")
    yield piece


def _is_batch(line: bytes) -> bool:
    return line.lstrip().startswith(b'{"batch"')


_Shared = tuple[str, str, dict[str, Any]]  # a batch line's created_at, creator, meta


def _parse_batch_line(data: dict[str, Any]) -> _Shared:
    if data.keys() != {"batch"}:
        raise CorruptRecordError(f"a batch line with the fields {shown(sorted(data))}")
    return parse_shared(data["batch"])


def _parse_line(
    data: object, seq: int, previous: NameRecord | None, compact: bool, shared: _Shared | None
) -> NameRecord | Pack | Sweep:
    if not isinstance(data, dict):
        raise CorruptRecordError(f"a log line is a JSON object, not {type(data).__name__}")
    if Sweep.is_line(data):  # before "pack": a sweep line has one too (see _sweeps)
        return Sweep.from_dict(data, seq)
    if "pack" in data:
        return Pack.from_dict(data)
    if compact:  # format 3: a short line, under a batch line
        data = _completed(data, shared)
    record = parse_record(data, previous)
    if record.scope != LAKE:  # scoped names live under scopes/, never in the log
        raise CorruptRecordError(
            f"the log binds lake names only, not {record.name!r} in scope {record.scope}"
        )
    return record


def _completed(data: dict[str, Any], shared: _Shared | None) -> dict[str, Any]:
    """A format-3 record line, with the fields its batch line gives: then ``parse_record``'s."""
    if not _SHORT_FIELDS.issuperset(data):
        raise CorruptRecordError(
            f"unknown fields in a record line: {shown(sorted(data.keys() - _SHORT_FIELDS))}"
        )
    if shared is None:
        raise CorruptRecordError("a record line with no batch line above it")
    created_at, creator, meta = shared
    return {**data, "scope": LAKE, "created_at": created_at, "creator": creator, "meta": meta}


def _numbers(names: list[str], suffix: str) -> list[int]:
    stems = (n.removesuffix(suffix) for n in names if n.endswith(suffix))
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses
    return sorted({int(s) for s in stems if s.isascii() and s.isdigit()})  # a file and a folder: once


class Log:
    """The commit log and snapshots of one remote."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self._columnar: set[int] = set()

    def append(
        self, seq: int, records: list[NameRecord], packs: list[Pack], sweeps: list[Sweep] | None = None
    ) -> None:
        """Create entry ``seq``; FileExistsError if another writer created it first."""
        body = encode(records, packs, sweeps or [], compact=self.remote.format >= 3)
        self.remote.create(entry_key(seq), body)

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
                key = entry_key(n)  # lines read lazily:
                yield from decode_pieces(entry_lines(body, key), n, key, compact=is_compact(body))

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
        """The numbers of the entries the snapshots were taken after, oldest first: format 2's
        files and format 3's folders (``columnar`` says which a number is, preferring 3)."""
        listed = self.remote.list_dir("snapshots")
        self._columnar = set(_numbers(listed, ""))
        return sorted(self._columnar | set(_numbers(listed, ".jsonl.gz")))

    def finished(self, seq: int) -> bool:
        """Whether snapshot ``seq`` (of the last ``snapshots`` listing) was written to its end:
        format 3 writes its manifest last, so a writer killed before it leaves shards only (a
        format-2 snapshot is one file, created whole)."""
        return not self.columnar(seq) or self.remote.size(_snapshot.manifest_key(seq)) is not None

    def columnar(self, seq: int) -> bool:
        """Whether snapshot ``seq`` (of the last ``snapshots`` listing) is of format 3."""
        return seq in self._columnar

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

    @property
    def places_records(self) -> bool:
        """Whether a snapshot on this remote says where each record's content is packed."""
        return self.remote.format >= 3

    def write_snapshot(
        self,
        seq: int,
        records: Iterable[tuple[NameRecord, tuple[str, int] | None]],
        packs: Iterable[Pack],
        sweeps: Iterable[Sweep] = (),
        tmp: Path | None = None,
    ) -> None:
        """``sweeps``: those not done by entry ``seq`` (a push after it must still see them).
        ``records``: sorted by name, each with where its content is packed (pack digest,
        offset) or None; ``packs``: the members no record places. Compressed a batch at a
        time into temp files in ``tmp``, so that the records need not be held at once:
        Parquet shards on a remote of format 3 (``_snapshot``), else one gzip file, whose
        lines cannot place a record (``places_records`` is False: give every member in
        ``packs`` and no location)."""
        if self.remote.format >= 3:
            _snapshot.write_snapshot(self.remote, seq, records, packs, sweeps, tmp)
            return
        key = snapshot_key(seq)
        with tempfile.TemporaryFile(dir=tmp) as staging:
            with gzip.GzipFile(fileobj=staging, mode="wb", mtime=0) as out:
                out.write(encode((), packs, sweeps))
                for chunk in batched(records):
                    if any(at is not None for _, at in chunk):
                        raise ValueError("a snapshot of format 2 cannot place a record in a pack")
                    out.write(NameRecord.lines([r for r, _ in chunk]))
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


def _stream_lines(raw: Any, key: str, kind: str) -> Iterator[bytes]:
    """The lines of the decompressing stream ``raw`` (pyarrow's), as ``_gzip_lines``."""
    pending = b""
    while True:
        try:
            chunk = raw.read(_CHUNK)
        except (OSError, ValueError) as e:  # pyarrow's codecs (ArrowInvalid is a ValueError)
            raise CorruptRecordError(f"{key} is not whole {kind} ({shown(str(e))})", record=key) from None
        if not chunk:
            break
        pending += bytes(chunk)
        *lines, pending = pending.split(b"\n")
        yield from lines
        if len(pending) > _MAX_LINE:
            raise CorruptRecordError(f"{key} holds a line longer than {_MAX_LINE} bytes", record=key)
    if pending:
        yield pending
