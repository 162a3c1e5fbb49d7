"""Upserts: which files of a version hold rows whose keys the new data has, and the rows a merge
writes back (the other rows of those files, then the new data).

Files are pruned before any is read: by partition values when the partition columns are
among the keys, and by the per-file min and max of the first key in the Delta log. Only
the key columns of the remaining files are read to find the ones touched; only those are
rewritten, streamed a file at a time into the writer (peak memory: about one file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakelet.core.errors import InvalidArgumentError
from lakelet.datasets._commits import Removed
from lakelet.datasets._dataset import Dataset
from lakelet.datasets._delta_log import AddFile

__all__ = ["check_unique", "checked_keys", "rewritten", "touched"]


def checked_keys(keys: Any, schema: pa.Schema, name: str) -> list[str]:
    """``keys`` as a list of columns of ``schema``; InvalidArgumentError in one line otherwise."""
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, list | tuple) or not keys or not all(isinstance(k, str) for k in keys):
        raise InvalidArgumentError(f"dataset {name!r}: keys must be a list of column names, not {keys!r}")
    missing = [k for k in keys if schema.get_field_index(k) < 0]
    if missing:
        raise InvalidArgumentError(
            f"dataset {name!r}: merge key {missing[0]!r} is not a column ({', '.join(schema.names)}); "
            "nothing was written"
        )
    return list(keys)


def check_unique(table: pa.Table, keys: list[str], name: str) -> None:
    """Two new rows with one key would both claim the row they replace."""
    distinct = table.select(keys).group_by(keys).aggregate([]).num_rows
    if distinct != table.num_rows:
        raise InvalidArgumentError(
            f"dataset {name!r}: {table.num_rows - distinct} rows of the new data repeat a key "
            f"({', '.join(keys)}); nothing was written"
        )


def touched(dataset: Dataset, new: pa.Table, keys: list[str]) -> list[AddFile]:
    """The files holding a row whose key is in ``new``."""
    wanted = new.select(keys)
    candidates = [f for f in dataset.snapshot.files.values() if _may_hold(f, wanted, keys)]
    if not candidates:
        return []
    paths = set()  # one scan of the key columns; each batch says which file it came from
    for tagged in dataset.files_scanner(candidates, columns=keys, sequential=True).scan_batches():
        batch = pa.Table.from_batches([tagged.record_batch])
        if tagged.fragment.path not in paths and batch.join(wanted, keys, join_type="left semi").num_rows:
            paths.add(tagged.fragment.path)
    return [f for f in candidates if str(dataset.folder / f.path) in paths]


def rewritten(
    dataset: Dataset | None,
    files: list[AddFile],
    new: pa.Table,
    keys: list[str],
    schema: pa.Schema,
    removed: Removed,
) -> Iterator[pa.RecordBatchReader]:
    """The rows a merge writes, in ``schema``, as one stream per file it rewrites: the rows of
    that file ``new`` does not replace, a batch at a time, then the new rows of its partition;
    last, the new rows no such stream took. ``removed`` counts the rows of ``files`` as they
    pass. One writer per stream, so memory is bounded by the largest file: pyarrow's dataset
    writer queues whatever its input gives faster than it encodes, and a scan outruns it."""
    wanted = new.select(keys)
    pending = np.ones(new.num_rows, dtype=bool)
    for entry in files if dataset is not None else []:
        mine = pending & _in_partition(new, entry.partition)
        pending &= ~mine
        yield _stream(_kept(dataset, entry, wanted, keys, schema, removed), new.filter(mine), schema)
    if pending.any() or not files:
        yield _stream(iter(()), new.filter(pending), schema)


def _kept(
    dataset: Dataset | None,
    entry: AddFile,
    wanted: pa.Table,
    keys: list[str],
    schema: pa.Schema,
    removed: Removed,
) -> Iterator[pa.RecordBatch]:
    assert dataset is not None
    for batch in dataset.files_scanner([entry], sequential=True).to_batches():
        removed.count(batch)
        kept = pa.Table.from_batches([batch]).join(wanted, keys, join_type="left anti")
        yield from _conform(kept.select(batch.schema.names), schema).to_batches()


def _stream(kept: Iterator[pa.RecordBatch], new: pa.Table, schema: pa.Schema) -> pa.RecordBatchReader:
    def batches() -> Iterator[pa.RecordBatch]:
        yield from kept
        yield from _conform(new, schema).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


def _in_partition(new: pa.Table, partition: dict[str, str | None]) -> Any:
    """Which rows of ``new`` belong in a file of ``partition`` (a value spelled otherwise than
    the cast to text spells it only sends its rows to the last stream)."""
    mask = np.ones(new.num_rows, dtype=bool)
    for column, value in partition.items():
        if column not in new.column_names:
            return np.zeros(new.num_rows, dtype=bool)
        values = new.column(column)
        held = pc.is_null(values) if value is None else pc.equal(pc.cast(values, pa.string()), value)
        mask &= pc.fill_null(held, False).to_numpy(zero_copy_only=False)
    return mask


def _may_hold(entry: AddFile, wanted: pa.Table, keys: list[str]) -> bool:
    for column, value in entry.partition.items():
        if column in keys:
            values = wanted.column(column)
            held = pc.is_null(values) if value is None else pc.equal(pc.cast(values, pa.string()), value)
            if not pc.any(held).as_py():
                return False
    bounds = _bounds(entry.stats, keys[0])
    if bounds is None:
        return True
    lo, hi = bounds
    column = wanted.column(keys[0])
    try:
        inside = pc.and_(pc.greater_equal(column, pa.scalar(lo)), pc.less_equal(column, pa.scalar(hi)))
    except (pa.ArrowException, TypeError):  # bounds of another type than the column: no pruning
        return True
    return bool(pc.any(inside).as_py())


def _bounds(stats: str | None, column: str) -> tuple[Any, Any] | None:
    if not stats:
        return None
    try:
        parsed = json.loads(stats)
    except ValueError:
        return None
    lo = parsed.get("minValues", {}).get(column) if isinstance(parsed.get("minValues"), dict) else None
    hi = parsed.get("maxValues", {}).get(column) if isinstance(parsed.get("maxValues"), dict) else None
    if type(lo) not in (int, float) or type(hi) not in (int, float):
        return None  # strings and dates: compared as the reader's types, not here
    return lo, hi


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
