"""A Delta table's Parquet checkpoint read back, each row held to the checks a commit file's
action gets (``_delta_log``), with the ``add`` rows checked column by column.

A checkpoint holds one ``add`` row per file of the version: thousands in a table of many
small commits. Checking each row as a Python object cost ~0.15 ms a file, most of the time
it takes to open such a table. So the ``add`` column is checked with ``pyarrow.compute``
first: a row whose path is plainly inside the table (a strict pattern: no ``%``, ``:``,
``\\``, ``.`` or ``..`` segment, no ``_delta_log/``, a ``.parquet`` name, short segments),
whose size and time are in range, with no deletion vector and exactly the table's partition
columns is built directly. Every other row goes through the commit file's parser
(``_delta_log._add``), which refuses it or accepts it exactly as before: the fast path only
ever accepts rows that parser accepts, so the refusals are the same.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakelet.core._digest import Digest
from lakelet.core.errors import CorruptRecordError
from lakelet.datasets import _delta_schema
from lakelet.datasets._delta_actions import DIGEST_TAG, AddFile, Files, Metadata, Snapshot, checkpoint_key
from lakelet.datasets._delta_log import (
    _add,
    _check_partition,
    _check_protocol,
    _commit,
    _stats_rows,
)
from lakelet.datasets._manifest import Invalid

__all__ = ["parse_checkpoint", "parse_last_checkpoint"]

_MAX_COUNT = 2**63 - 1
_MAX_PATH_BYTES = 4096
# a path that _delta_log._path accepts unchanged (nothing to decode, nothing to refuse)
_PLAIN_PATH = r"^([A-Za-z0-9_][A-Za-z0-9_=+.,-]{0,254}/)*[A-Za-z0-9_][A-Za-z0-9_=+.,-]{0,246}\.parquet$"
# what _delta_log._digest accepts: the file is named after the first 32 hex of its digest
# (matched, then compared by slices: the path's last 40 characters but 8, the tag's 7th to 39th)
_NAMED_PATH = r"(?:^|/)part-[0-9a-f]{32}\.parquet$"
_DIGEST_TAG_VALUE = r"^(?:blake3|sha256):[0-9a-f]{64}$"
_MAPS = frozenset({"partitionValues", "tags", "configuration", "options"})


def parse_last_checkpoint(data: bytes) -> int | None:
    """The version ``_last_checkpoint`` points to; None if it is not one lakelet can use (it is
    only a hint: the commits are read instead)."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("parts") is not None or "v2Checkpoint" in obj:
        return None
    version = obj.get("version")
    return version if type(version) is int and 0 <= version < 2**62 else None


def parse_checkpoint(data: bytes, name: str, version: int, copy: str = "") -> Snapshot:
    """The table at ``version`` from the bytes of its single-file Parquet checkpoint, each row
    checked as the same action in a commit file would be."""
    import pyarrow.parquet as pq

    key = checkpoint_key(name, version)

    def refused(e: Invalid) -> CorruptRecordError:
        return CorruptRecordError(f"dataset {name!r}: invalid checkpoint {key} ({copy}): {e}", record=key)

    try:
        try:
            table = pq.read_table(io.BytesIO(data))
        except (pa.ArrowException, OSError, ValueError) as e:
            raise Invalid(f"not a Parquet checkpoint ({e})") from None
        return _snapshot(table, name, version, refused)
    except Invalid as e:
        raise refused(e) from None


def _snapshot(
    table: pa.Table, name: str, version: int, refused: Callable[[Invalid], CorruptRecordError]
) -> Snapshot:
    others = [
        {column: _plain_maps(value)}
        for column in table.column_names
        if column != "add"
        for value in _valid(table.column(column)).to_pylist()
    ]
    adds = _valid(table.column("add")) if "add" in table.column_names else pa.array([])
    if not others and not len(adds):
        raise Invalid("it holds no action")
    commit = _commit(others, name, version)  # protocol, metaData, tombstones: few rows
    if commit.protocol is None or commit.metadata is None:
        raise Invalid("the table has no protocol or no metaData at this version")
    _check_protocol(commit.protocol, name)
    build = _adds(adds, commit.metadata)

    def files() -> dict[str, AddFile]:
        try:
            return {a.path: a for a in build()}
        except Invalid as e:
            raise refused(e) from None

    return Snapshot(version, commit.protocol, commit.metadata, Files(files), None, commit.timestamp)


def _valid(column: pa.ChunkedArray) -> pa.Array:
    array = column.combine_chunks()
    return array.filter(array.is_valid())


def _adds(adds: pa.Array, metadata: Metadata) -> Callable[[], list[AddFile]]:
    """Every check that can refuse a row of ``adds``, now; what builds their files, in order,
    later (``Files``). A row the column-wise checks do not pass goes through the commit file's
    parser now: Invalid for the first one it refuses."""
    if not len(adds):
        return list
    # a forged checkpoint may give the column any types: then every row goes to the parser
    tags = _Tags(adds) if _plain_types(adds.type, metadata) else None
    fast = _plain_rows(adds, metadata, tags) if tags is not None else [False] * len(adds)
    parsed = {}
    for i, plain in enumerate(fast):
        if not plain:  # anything unusual: the commit file's parser, refusal and all
            add = _add(_plain_maps(adds[i].as_py()))
            _check_partition(add, metadata)
            parsed[i] = add

    def build() -> list[AddFile]:
        columns = {f.name: adds.field(f.name) for f in adds.type}
        lists = {k: columns[k].to_pylist() for k in ("path", "size", "modificationTime", "stats")}
        lists["digest"] = tags.digests.to_pylist() if tags is not None else [None] * len(fast)
        values = columns["partitionValues"].to_pylist() if "partitionValues" in columns else None
        return [parsed[i] if i in parsed else _plain_add(i, lists, values) for i in range(len(fast))]

    return build


def _plain_add(i: int, lists: dict[str, list[Any]], values: list[Any] | None) -> AddFile:
    path: str = lists["path"][i]
    stats = lists["stats"][i]
    rows = _stats_rows(stats, path)  # the column is text (_plain_types)
    tag = lists["digest"][i]
    digest = Digest(*tag.split(":", 1)) if tag is not None else None  # checked in _plain_rows
    partition = dict(values[i]) if values is not None and values[i] is not None else {}
    return AddFile(path, partition, lists["size"][i], rows, digest, lists["modificationTime"][i] or 0, stats)


def _plain_rows(adds: pa.Array, metadata: Metadata, tags: _Tags) -> list[bool]:
    """Which rows of an ``add`` column of the plain types are plainly valid (see the module's
    note); False sends a row to the parser."""
    path = adds.field("path")
    ok = pc.and_kleene(
        pc.match_substring_regex(path, _PLAIN_PATH),
        pc.invert(pc.starts_with(path, "_delta_log/")),
    )
    ok = pc.and_kleene(ok, pc.less_equal(pc.binary_length(path), _MAX_PATH_BYTES))
    size = adds.field("size")
    ok = pc.and_kleene(ok, pc.and_kleene(size.is_valid(), pc.greater_equal(size, 0)))
    stamp = adds.field("modificationTime")
    ok = pc.and_kleene(ok, pc.or_kleene(stamp.is_null(), pc.greater_equal(stamp, 0)))
    if "deletionVector" in {f.name for f in adds.type}:
        ok = pc.and_kleene(ok, adds.field("deletionVector").is_null())
    # lakelet's digest tag: at most one, a digest, and the file named after it (_delta_log._digest)
    digest = tags.digests
    named = pc.and_kleene(
        pc.match_substring_regex(path, _NAMED_PATH), pc.match_substring_regex(digest, _DIGEST_TAG_VALUE)
    )
    same = pc.equal(pc.utf8_slice_codeunits(path, -40, -8), pc.utf8_slice_codeunits(digest, 7, 39))
    ok = pc.and_kleene(ok, pc.or_kleene(digest.is_null(), pc.fill_null(pc.and_kleene(named, same), False)))
    mask = pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
    return (mask & _partition_rows(adds, metadata) & (tags.counts <= 1)).tolist()  # type: ignore[no-any-return]


class _Tags:
    """lakelet's digest tags of the ``add`` rows, found once: ``digests``, each row's tag (null
    where it has none; the last one where it has several: such a row goes to the parser), and
    ``counts``, how many each row has."""

    def __init__(self, adds: pa.Array) -> None:
        pairs = pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])
        tags = adds.field("tags").cast(pa.list_(pairs))  # the list kernels take no map
        flat = pc.list_flatten(tags)
        mine = pc.fill_null(pc.equal(flat.field("key"), DIGEST_TAG), False)
        owner = pc.list_parent_indices(tags).filter(mine).to_numpy(zero_copy_only=False)
        n = len(adds)
        self.counts = np.bincount(owner, minlength=n) if len(owner) else np.zeros(n, dtype=np.int64)
        out = np.full(n, None, dtype=object)
        out[owner] = flat.field("value").filter(mine).to_numpy(zero_copy_only=False)
        self.digests = pa.array(out, pa.string())


def _plain_types(type_: pa.DataType, metadata: Metadata) -> bool:
    """Whether the ``add`` column has the types a Delta writer gives it (a forged checkpoint
    may give it any: then every row goes to the parser)."""
    if not pa.types.is_struct(type_):
        return False
    fields = {f.name: f.type for f in type_}
    string_map = pa.map_(pa.string(), pa.string())
    return (
        pa.types.is_string(fields.get("path", pa.null()))
        and pa.types.is_signed_integer(fields.get("size", pa.null()))
        and pa.types.is_signed_integer(fields.get("modificationTime", pa.null()))
        and pa.types.is_string(fields.get("stats", pa.string()))
        and fields.get("tags", string_map).equals(string_map)
        and fields.get("partitionValues", string_map).equals(string_map)
        and ("partitionValues" in fields or not metadata.partition_columns)
        and "stats" in fields
        and "tags" in fields
    )


def _partition_rows(adds: pa.Array, metadata: Metadata) -> Any:
    """Rows whose partition values name each partition column once and convert to its type."""
    n = len(adds)
    columns = list(metadata.partition_columns)
    if "partitionValues" not in {f.name for f in adds.type}:
        return np.full(n, not columns)
    pairs = pa.struct([pa.field("key", pa.string(), nullable=False), pa.field("value", pa.string())])
    values = adds.field("partitionValues").cast(pa.list_(pairs))  # the list kernels take no map
    lengths = pc.fill_null(pc.list_value_length(values), -1).to_numpy(zero_copy_only=False)
    ok = lengths == len(columns)
    if not columns:
        return ok | (lengths == -1)  # no map at all: no partition values
    flat = pc.list_flatten(values)
    keys, items = flat.field("key"), flat.field("value")
    owner = pc.list_parent_indices(values).to_numpy(zero_copy_only=False)
    # each column a distinct bit: k keys summing to 2**k - 1 are the k columns, once each
    # (the float sums of bincount stay exact up to 30 columns)
    bit = np.zeros(len(keys), dtype=np.int64)
    types = {f.name: f.type for f in metadata.schema}
    for index, column in enumerate(columns):
        mine = pc.equal(keys, column).to_numpy(zero_copy_only=False)
        bit[mine] = 1 << index
        for value in pc.unique(items.filter(pc.equal(keys, column))).to_pylist():
            if not _converts(value, types.get(column)):
                return np.zeros(n, dtype=bool)  # the parser names the row and the value
    sums = np.bincount(owner, weights=bit, minlength=n) if len(owner) else np.zeros(n)
    return ok & (sums == (1 << len(columns)) - 1) if len(columns) <= 30 else np.zeros(n, dtype=bool)


def _converts(value: str | None, type_: pa.DataType | None) -> bool:
    if type_ is None:
        return False
    try:
        _delta_schema.partition_scalar(value, type_)
    except ValueError:
        return False
    return True


def _plain_maps(value: Any, key: str = "") -> Any:
    """A checkpoint's Parquet maps (lists of pairs) as the JSON objects of a commit file."""
    if isinstance(value, dict):
        return {k: _plain_maps(v, k) for k, v in value.items() if v is not None}
    if key in _MAPS and isinstance(value, list):
        return {p[0]: p[1] for p in value if isinstance(p, tuple) and len(p) == 2}
    return value
