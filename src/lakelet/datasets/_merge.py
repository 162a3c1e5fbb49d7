"""Upserts: which files of a version hold rows whose keys the new data has, and the rows a merge
writes back (the other rows of those files, then the new data).

Files are pruned before any is read: by partition values when the partition columns are
among the keys, and by the per-file min and max of the first key in the Delta log. Only
the key columns of the remaining files are read to find the ones touched; only those are
read whole and rewritten.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from lakelet.core.errors import InvalidArgumentError
from lakelet.datasets._dataset import Dataset
from lakelet.datasets._delta_log import AddFile

__all__ = ["check_unique", "checked_keys", "combined", "touched"]


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


def touched(dataset: Dataset, new: pa.Table, keys: list[str]) -> tuple[list[AddFile], pa.Table, pa.Table]:
    """The files holding a row whose key is in ``new``, all their rows, and those rows but the
    ones ``new`` replaces."""
    wanted = new.select(keys)
    candidates = [f for f in dataset.snapshot.files.values() if _may_hold(f, wanted, keys)]
    hit = []
    if candidates:  # one scan of the key columns; each batch says which file it came from
        paths = set()
        for tagged in dataset.files_scanner(candidates, columns=keys).scan_batches():
            batch = pa.Table.from_batches([tagged.record_batch])
            if tagged.fragment.path not in paths and batch.join(wanted, keys, join_type="left semi").num_rows:
                paths.add(tagged.fragment.path)
        hit = [f for f in candidates if str(dataset.folder / f.path) in paths]
    rows = dataset.read_files(hit) if hit else dataset.schema.empty_table()
    kept = rows.join(wanted, keys, join_type="left anti") if rows.num_rows else rows
    return hit, rows, kept.select(rows.column_names)


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


def combined(kept: pa.Table | None, new: pa.Table, schema: pa.Schema) -> pa.Table:
    """The rows a merge writes: what stays of the rewritten files, then the new rows, both in
    the table's schema after the merge (a column one side lacks is null there)."""
    parts = [t for t in (kept, new) if t is not None and t.num_rows]
    if not parts:
        return schema.empty_table()
    return pa.concat_tables([_conform(t, schema) for t in parts])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)
