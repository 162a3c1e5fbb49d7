"""Format-3 snapshots: the remote's state after a log entry, as Parquet shards.

A new machine loads a snapshot at a few microseconds a name: the columns are checked
column-wise (pyarrow.compute), the names too (``check_names``: ``validate_name``'s rule), a
slice of a row group (a piece) at a time, read in a worker thread one piece ahead of the load,
so memory holds two pieces. The layout, under
``snapshots/<seq, 12 digits>/`` (docs/remote-layout.md, "Snapshots (format 3)"):

- ``batches-<k>.parquet``: the facts a batch of names shares (batch number, created_at,
  creator, meta as JSON text);
- ``names-<k>.parquet``: one row per name, sorted by name across shards (name, digest
  algorithm, digest as 32 bytes, size, batch number, removed_at; and where its content is
  packed, pack digest and offset, when the manifest says ``"located": true``);
- ``packs-<k>.parquet``: one row per pack member (pack digest, member algorithm and digest,
  offset, size): in a located snapshot, only the members no name's row places;
- ``manifest.json``: written last, by conditional create: the shards and their row counts,
  the first and last name of each names shard, and the sweep lines not done. A snapshot
  folder without it is not a snapshot (yet: its writer may still be sending shards).

A snapshot is a shortcut through the log, so any row that fails its check refuses the whole
snapshot (CorruptRecordError); the caller loads it in one transaction and falls back.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lakelet.core._ahead import read_ahead
from lakelet.core._batch import batch_size, batched
from lakelet.core._digest import BLOB_ALGORITHMS, is_digest
from lakelet.core._names import check_names
from lakelet.core._records import MAX_COUNT, check_count, parse_json_line, shown
from lakelet.core.errors import CorruptRecordError, InvalidArgumentError
from lakelet.remote._remote import Remote
from lakelet.storage._packs import Pack
from lakelet.storage._refs import NameRecord, PackMembers, SnapshotPiece, check_time, parse_shared
from lakelet.storage._scopes import LAKE
from lakelet.storage._sweeps import Sweep

__all__ = ["folder_of", "manifest_key", "read_snapshot", "write_snapshot"]

_SHARD_ROWS = 1 << 20  # rows a shard: a new machine fetches shards concurrently
_MAX_GROUP_ROWS = 1 << 20  # a row group is a piece: one a hostile writer made huge is refused
_MAX_GROUP_BYTES = 256 << 20
_CHUNK = 1 << 18  # bytes of a shard read at a time
_MANIFEST = "manifest.json"
_MANIFEST_MAX = 64 << 20
_SHARD_KEY = re.compile(r"(batches|names|packs)-[0-9]{6}\.parquet")
# a digest blob's first byte, by algorithm (each algorithm core._digest knows makes 32 bytes)
_CODES = {algorithm: bytes([i + 1]) for i, algorithm in enumerate(BLOB_ALGORITHMS)}
_ENCODER = json.JSONEncoder(sort_keys=True)  # a batch's meta text, as the index keeps it


def folder_of(seq: int) -> str:
    return f"snapshots/{seq:012d}"


def manifest_key(seq: int) -> str:
    return f"{folder_of(seq)}/{_MANIFEST}"


def _schemas(located: bool = True) -> dict[str, Any]:
    """The shards' schemas; ``located``: a names shard says where each name's content is
    packed (a snapshot written before it did not: its manifest has no ``located``)."""
    import pyarrow as pa

    digest = [("algo", pa.string()), ("digest", pa.binary(32))]
    return {
        "batches": pa.schema(
            [
                ("batch", pa.int64()),
                ("created_at", pa.string()),
                ("creator", pa.string()),
                ("meta", pa.string()),
            ]
        ),
        "names": pa.schema(
            [
                ("name", pa.string()),
                *digest,
                ("size", pa.int64()),
                ("batch", pa.int64()),
                ("removed_at", pa.string()),
                *([("pack", pa.string()), ("offset", pa.int64())] if located else []),
            ]
        ),
        "packs": pa.schema([("pack", pa.string()), *digest, ("offset", pa.int64()), ("size", pa.int64())]),
    }


# --- writing -------------------------------------------------------------------------------


class _Shards:
    """Parquet shards of one kind, ``_SHARD_ROWS`` rows each, row groups of a batch."""

    def __init__(self, kind: str, folder: Path) -> None:
        self.kind, self.folder = kind, folder
        self.schema = _schemas()[kind]
        self.done: list[dict[str, Any]] = []
        self._writer: Any = None
        self._rows = 0
        self._first = self._last = ""

    def write(self, columns: dict[str, list[Any]], first: str = "", last: str = "") -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is not None and self._rows >= _SHARD_ROWS:
            self.close()
        if self._writer is None:
            key = f"{self.kind}-{len(self.done) + 1:06d}.parquet"
            self._writer = pq.ParquetWriter(
                self.folder / key, self.schema, compression="zstd", use_dictionary=["algo", "pack"]
            )
            self._key, self._rows, self._first = key, 0, first
        table = pa.table(columns, schema=self.schema)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._rows += table.num_rows
        self._last = last

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        shard: dict[str, Any] = {"key": self._key, "rows": self._rows}
        if self.kind == "names":
            shard |= {"first": self._first, "last": self._last}
        self.done.append(shard)
        self._writer = None


def _digest_columns(digests: list[str]) -> tuple[list[str], list[bytes]]:
    algos, raw = [], []
    for d in digests:
        algo, _, hexdigest = d.partition(":")
        algos.append(algo)
        raw.append(bytes.fromhex(hexdigest))
    return algos, raw


def write_snapshot(
    remote: Remote,
    seq: int,
    records: Iterable[tuple[NameRecord, tuple[str, int] | None]],
    packs: Iterable[Pack],
    sweeps: Iterable[Sweep],
    tmp: Path | None,
) -> None:
    """Write snapshot ``seq`` of ``records`` (the remote's bindings, sorted by name, each with
    where its content is packed, if it is: pack digest, offset), ``packs`` (the members no
    record places) and the ``sweeps`` not done, a batch at a time through temp files; the
    manifest last."""
    with tempfile.TemporaryDirectory(dir=tmp) as staging:
        folder = Path(staging)
        kinds = {kind: _Shards(kind, folder) for kind in ("batches", "names", "packs")}
        numbers: dict[tuple[str, str, str], int] = {}
        metas: dict[int, tuple[dict[str, Any], str]] = {}  # holding the dict keeps its id unique
        for located in batched(records):
            chunk = [r for r, _ in located]
            new: dict[str, list[Any]] = {"batch": [], "created_at": [], "creator": [], "meta": []}
            batches = []
            for r in chunk:
                meta = metas.get(id(r.meta))
                if meta is None:
                    meta = metas[id(r.meta)] = (r.meta, _ENCODER.encode(r.meta))
                key = (r.created_at, r.creator, meta[1])
                number = numbers.get(key)
                if number is None:
                    number = numbers[key] = len(numbers) + 1
                    for column, value in zip(new, (number, *key), strict=True):
                        new[column].append(value)
                batches.append(number)
            if new["batch"]:
                kinds["batches"].write(new)
            algos, raw = _digest_columns([r.digest for r in chunk])
            columns: dict[str, list[Any]] = {
                "name": [r.name for r in chunk],
                "algo": algos,
                "digest": raw,
                "size": [r.size for r in chunk],
                "batch": batches,
                "removed_at": [r.removed_at for r in chunk],
                "pack": [None if at is None else at[0] for _, at in located],
                "offset": [None if at is None else at[1] for _, at in located],
            }
            kinds["names"].write(columns, chunk[0].name, chunk[-1].name)
        members = ((p.digest, m) for p in packs for m in p.members)
        for group in batched(members):
            algos, raw = _digest_columns([m.digest for _, m in group])
            columns = {
                "pack": [p for p, _ in group],
                "algo": algos,
                "digest": raw,
                "offset": [m.offset for _, m in group],
                "size": [m.size for _, m in group],
            }
            kinds["packs"].write(columns)
        manifest: dict[str, Any] = {"format": 3, "seq": seq, "located": True}
        for kind, shards in kinds.items():
            shards.close()
            manifest[kind] = shards.done
            for shard in shards.done:
                # the same bytes as any other writer of this snapshot would send
                remote.upload(folder / shard["key"], f"{folder_of(seq)}/{shard['key']}")
        manifest["sweeps"] = [s.to_dict() for s in sweeps]
        with contextlib.suppress(FileExistsError):  # another machine took the same one: same content
            remote.create(manifest_key(seq), json.dumps(manifest).encode())


# --- reading -------------------------------------------------------------------------------


def _parse_manifest(body: bytes, seq: int) -> dict[str, Any]:
    """The one validating parser of a snapshot manifest."""
    data = parse_json_line(body)
    fields = {"format", "seq", "batches", "names", "packs", "sweeps"}
    if isinstance(data, dict) and data.keys() == fields:
        data["located"] = False  # written before names said where their content is packed
    if (
        not isinstance(data, dict)
        or data.keys() != fields | {"located"}
        or data["located"] not in (True, False)
    ):
        raise CorruptRecordError(
            f"a snapshot manifest with the fields {shown(sorted(data) if isinstance(data, dict) else data)}"
        )
    if data["format"] != 3 or data["seq"] != seq:
        raise CorruptRecordError(f"a manifest of format {shown(data['format'])}, entry {shown(data['seq'])}")
    for kind in ("batches", "names", "packs"):
        shards = data[kind]
        if not isinstance(shards, list):
            raise CorruptRecordError(f"the {kind} shards of a snapshot are not a list")
        want = {"key", "rows", "first", "last"} if kind == "names" else {"key", "rows"}
        for shard in shards:
            if not isinstance(shard, dict) or shard.keys() != want:
                raise CorruptRecordError(f"a {kind} shard {shown(shard)}")
            key = shard["key"]
            if not isinstance(key, str) or not _SHARD_KEY.fullmatch(key) or not key.startswith(kind):
                raise CorruptRecordError(f"a shard key {shown(key)}")  # a key chooses a path
            check_count(shard["rows"], f"the rows of {key}")
            if kind == "names" and not (isinstance(shard["first"], str) and isinstance(shard["last"], str)):
                raise CorruptRecordError(f"the name range of {key} is not two names")
    keys = [s["key"] for kind in ("batches", "names", "packs") for s in data[kind]]
    if len(set(keys)) != len(keys):
        raise CorruptRecordError("a snapshot manifest names a shard twice")
    if not isinstance(data["sweeps"], list) or not all(isinstance(s, dict) for s in data["sweeps"]):
        raise CorruptRecordError("the sweeps of a snapshot are not a list of objects")
    data["sweeps"] = [Sweep.from_dict(s, seq) for s in data["sweeps"]]
    return data


def _read_manifest(remote: Remote, seq: int) -> bytes:
    """The manifest's bytes, read a chunk at a time up to its bound (FileNotFoundError: none)."""
    key = manifest_key(seq)
    body = b""
    with remote.errors(f"reading {key}"), remote.open_file(key) as src:
        while chunk := src.read(1 << 16):
            body += chunk
            if len(body) > _MANIFEST_MAX:
                raise CorruptRecordError(f"{key} is longer than {_MANIFEST_MAX} bytes", record=key)
    return body


def read_snapshot(remote: Remote, seq: int, tmp: Path, prefix: str = "") -> Iterator[SnapshotPiece]:
    """Snapshot ``seq`` in pieces (a row group each), every value checked: CorruptRecordError
    at the first that is not valid, FileNotFoundError when it has no manifest. Its shards are
    downloaded ``remote.transfers`` at a time into ``tmp``, and each is read as it arrives,
    a piece ahead of the caller, in a worker thread (the caller loads one meanwhile).
    ``prefix``: only the names under it, from only the names shards whose first and last
    name (the manifest's) can hold one; every batches and packs shard is read."""
    manifest = _parse_manifest(_read_manifest(remote, seq), seq)
    if prefix:
        manifest = {**manifest, "names": [s for s in manifest["names"] if _may_hold(s, prefix)]}
    yield from read_ahead(_shard_pieces(remote, seq, manifest, tmp, prefix))
    yield SnapshotPiece([], [], [], [], [], [], [], [], manifest["sweeps"])


def _may_hold(shard: dict[str, Any], prefix: str) -> bool:
    """Whether a names shard of names from ``first`` to ``last`` may hold one under ``prefix``
    (a first name past the prefix that does not start with it sorts after all that do)."""
    return bool(shard["last"] >= prefix and (shard["first"] <= prefix or shard["first"].startswith(prefix)))


def _shard_pieces(
    remote: Remote, seq: int, manifest: dict[str, Any], tmp: Path, prefix: str = ""
) -> Iterator[SnapshotPiece]:
    shards = [(kind, s) for kind in ("batches", "packs", "names") for s in manifest[kind]]
    check = _Checker()
    with (
        tempfile.TemporaryDirectory(dir=tmp) as staging,
        ThreadPoolExecutor(max(1, remote.transfers)) as pool,
    ):

        def fetch(key: str) -> Path:
            path = Path(staging) / key
            source = f"{folder_of(seq)}/{key}"
            with remote.errors(f"reading {key}"), remote.open_file(source) as src, path.open("wb") as out:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
            return path

        fetched: list[Future[Path]] = [pool.submit(fetch, s["key"]) for _, s in shards]
        try:
            for (kind, shard), future in zip(shards, fetched, strict=True):
                path = future.result()
                yield from _pieces(kind, shard, path, check, manifest["located"], prefix)
                path.unlink()
        finally:
            for future in fetched:
                future.cancel()


def _pieces(
    kind: str, shard: dict[str, Any], path: Path, check: _Checker, located: bool, prefix: str = ""
) -> Iterator[SnapshotPiece]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    key = shard["key"]
    try:
        file = pq.ParquetFile(path)
        meta = file.metadata
        if not file.schema_arrow.equals(_schemas(located)[kind]) or meta.num_rows != shard["rows"]:
            raise CorruptRecordError(f"{key} is not a {kind} shard of {shard['rows']} rows")
        if kind == "names" and meta.num_rows and shard["first"] > shard["last"]:
            raise CorruptRecordError(f"{key}: its first name sorts after its last")
        for i in range(meta.num_rows and meta.num_row_groups):
            group = meta.row_group(i)
            if group.num_rows > _MAX_GROUP_ROWS or group.total_byte_size > _MAX_GROUP_BYTES:
                raise CorruptRecordError(f"{key}: row group {i} is bigger than a piece can be")
            table = file.read_row_group(i)  # columnar: compact; its Python values are not
            table.validate(full=True)  # Parquet holds bytes: text that is not UTF-8 is refused
            if prefix and kind == "names":
                import pyarrow.compute as pc

                table = table.filter(pc.starts_with(table.column("name"), prefix))
            size = batch_size()
            for start in range(0, table.num_rows, size):
                yield getattr(check, kind)(table.slice(start, size), key, shard)
    except (pa.ArrowException, OSError) as e:  # not Parquet, cut short, a column it cannot read
        raise CorruptRecordError(
            f"{key} is not a whole Parquet shard ({shown(str(e))})", record=key
        ) from None


class _Checker:
    """The one validating parser of snapshot rows, a row group at a time, with what rows of
    earlier groups decide (the batches given, the last name)."""

    def __init__(self) -> None:
        self.given: set[int] = set()
        self.last_name: str | None = None

    def batches(self, table: Any, key: str, shard: dict[str, Any]) -> SnapshotPiece:
        shared = []
        for number, created_at, creator, meta in zip(
            *(table.column(c).to_pylist() for c in table.column_names), strict=True
        ):
            if number is None or number in self.given:
                raise CorruptRecordError(f"{key}: batch number {shown(number)} missing or given twice")
            try:
                parsed = parse_shared(
                    {"created_at": created_at, "creator": creator, "meta": parse_json_line(meta or "")}
                )
            except CorruptRecordError as e:
                raise CorruptRecordError(f"{key}: batch {number}: {e}") from None
            self.given.add(number)
            shared.append((number, parsed[0], parsed[1], _ENCODER.encode(parsed[2])))
        return SnapshotPiece(shared, [], [], [], [], [], [], [], [])

    def names(self, table: Any, key: str, shard: dict[str, Any]) -> SnapshotPiece:
        import pyarrow as pa
        import pyarrow.compute as pc

        _no_nulls(table, key, ("name", "algo", "digest", "size", "batch"))
        column = table.column("name")
        try:
            check_names(column)  # validate_name's rule, column-wise
        except InvalidArgumentError as e:  # InvalidNameError is one
            raise CorruptRecordError(f"{key}: {e}") from None
        n = len(column)
        if n > 1 and not pc.all(pc.less(column.slice(0, n - 1), column.slice(1))).as_py():
            raise CorruptRecordError(f"{key}: names not sorted, or one given twice")
        names: list[str] = column.to_pylist()
        if names and self.last_name is not None and not self.last_name < names[0]:
            raise CorruptRecordError(f"{key}: names not sorted across pieces")
        if names and not shard["first"] <= names[0] <= names[-1] <= shard["last"]:
            raise CorruptRecordError(f"{key}: names outside the range its manifest gives")
        self.last_name = names[-1] if names else self.last_name
        digests = _digest_blobs(table, key)
        sizes = table.column("size")
        if n and (pc.min(sizes).as_py() < 0 or pc.max(sizes).as_py() > MAX_COUNT):
            raise CorruptRecordError(f"{key}: a size that is not a count of 0 or more")
        given = pa.array(sorted(self.given), pa.int64())
        if n and not pc.all(pc.is_in(table.column("batch"), value_set=given)).as_py():
            raise CorruptRecordError(f"{key}: a batch number no batches shard gives")
        removed = table.column("removed_at")
        for i in pc.indices_nonzero(pc.is_valid(removed)).to_pylist():  # (few: tombstones)
            check_time(removed[i].as_py(), "removed_at", names[i])
        return SnapshotPiece(
            [],
            [LAKE] * n,
            names,
            digests,
            sizes.to_pylist(),
            table.column("batch").to_pylist(),
            removed.to_pylist(),
            [],
            [],
            _located(table, key) if "pack" in table.column_names else [],
        )

    def packs(self, table: Any, key: str, shard: dict[str, Any]) -> SnapshotPiece:
        import pyarrow.compute as pc

        _no_nulls(table, key, ("pack", "algo", "digest", "offset", "size"))
        column = table.column("pack")
        for pack in pc.unique(column).to_pylist():
            if not is_digest(pack):
                raise CorruptRecordError(f"{key}: not a digest: {shown(pack)}")
        for name in ("offset", "size"):
            values = table.column(name)
            if len(values) and (pc.min(values).as_py() < 0 or pc.max(values).as_py() > MAX_COUNT):
                raise CorruptRecordError(f"{key}: a member {name} that is not a count")
        digests = _digest_blobs(table, key)
        offsets, sizes = table.column("offset").to_pylist(), table.column("size").to_pylist()
        # a pack's members are rows in a run (a run cut by a piece's end goes on in the next)
        n = len(column)
        cuts = [0]
        if n:
            changes = pc.indices_nonzero(pc.not_equal(column.slice(0, n - 1), column.slice(1)))
            cuts += [i + 1 for i in changes.to_pylist()] + [n]
        packs = [
            PackMembers(column[start].as_py(), digests[start:end], offsets[start:end], sizes[start:end])
            for start, end in itertools.pairwise(cuts)
        ]
        return SnapshotPiece([], [], [], [], [], [], [], packs, [])


def _located(table: Any, key: str) -> list[tuple[str, int] | None]:
    """Where each name's content is packed (pack digest, offset), or None: both or neither
    given, a pack digest strict, an offset a count."""
    import pyarrow.compute as pc

    packs, offsets = table.column("pack"), table.column("offset")
    if not pc.all(pc.equal(pc.is_null(packs), pc.is_null(offsets))).as_py() and len(packs):
        raise CorruptRecordError(f"{key}: a name with a pack and no offset, or an offset and no pack")
    for pack in pc.unique(packs).drop_null().to_pylist():
        if not is_digest(pack):
            raise CorruptRecordError(f"{key}: not a digest: {shown(pack)}")
    if offsets.null_count < len(offsets) and (
        pc.min(offsets).as_py() < 0 or pc.max(offsets).as_py() > MAX_COUNT
    ):
        raise CorruptRecordError(f"{key}: a pack offset that is not a count")
    return [
        None if pack is None else (pack, offset)
        for pack, offset in zip(packs.to_pylist(), offsets.to_pylist(), strict=True)
    ]


def _no_nulls(table: Any, key: str, columns: tuple[str, ...]) -> None:
    for column in columns:
        if table.column(column).null_count:
            raise CorruptRecordError(f"{key}: a {column} that is null")


def _digest_blobs(table: Any, key: str) -> list[bytes]:
    """Each row's digest as the index stores it (``BLOB_ALGORITHMS``): a known algorithm, and
    its bytes (the schema holds them to 32). Made as one buffer of 33-byte rows by strided
    copies, then cut: half the time of a bytes object from pyarrow and another per row."""
    import pyarrow as pa
    import pyarrow.compute as pc

    algo = table.column("algo")
    algos = pc.unique(algo).to_pylist()
    if any(a not in _CODES for a in algos):
        raise CorruptRecordError(f"{key}: a digest algorithm that is none: {shown(algos)}")
    digests = table.column("digest").combine_chunks()
    n = len(digests)
    if n == 0:
        return []
    # (its rows only, should the array be a slice of a row group's whole buffer)
    raw = digests.buffers()[1].slice(digests.offset * 32, n * 32).to_pybytes()
    rows = bytearray(33 * n)
    if len(algos) == 1:
        rows[0::33] = _CODES[algos[0]] * n
    else:
        rows[0::33] = bytes(i + 1 for i in pc.index_in(algo, value_set=pa.array(BLOB_ALGORITHMS)).to_pylist())
    for i in range(32):
        rows[i + 1 :: 33] = raw[i::32]
    data = bytes(rows)
    return [data[i : i + 33] for i in range(0, len(data), 33)]
