"""What one write commits on top of whatever version is latest: the schema after it, the
protocol and metaData when they change, the files it adds and removes, and lakelet's
``commitInfo`` (row count, statistics, who, which run, lineage)."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from lakelet.core import _config
from lakelet.core._digest import Digest
from lakelet.core._version import __version__ as LAKELET_VERSION
from lakelet.core.errors import InvalidArgumentError, SchemaConflictError
from lakelet.datasets import _delta_log, _delta_schema, _stats
from lakelet.datasets._dataset import snapshot_rows, snapshot_schema, snapshot_stats
from lakelet.datasets._delta_log import AddFile, LakeletInfo, Metadata, Protocol, Snapshot
from lakelet.datasets._files import NULL_PARTITION, Written
from lakelet.lake._pending import CURRENT

__all__ = ["Removed", "Write", "commit_body", "merged_schema", "merged_stats", "partitioning", "without_rows"]


def merged_schema(old: pa.Schema | None, new: pa.Schema, name: str) -> pa.Schema:
    """The schema after appending ``new``: new nullable columns are fine, type changes are not."""
    if old is None:
        return new
    for field in new:
        index = old.get_field_index(field.name)
        if index >= 0 and not old.field(index).type.equals(field.type):
            raise SchemaConflictError(
                f"dataset {name!r}: column {field.name!r} is {old.field(index).type} in the dataset "
                f"but {field.type} in the new data; nothing was written (cast it, or write with "
                'mode="overwrite")',
                dataset=name,
            )
        if index < 0 and not field.nullable:
            raise SchemaConflictError(
                f"dataset {name!r}: new column {field.name!r} must be nullable to be appended", dataset=name
            )
    missing = [f for f in old if new.get_field_index(f.name) < 0]
    return (
        pa.schema(list(new) + missing)
        if missing
        else pa.schema(list(old) + [f for f in new if old.get_field_index(f.name) < 0])
    )


@dataclass
class Removed:
    """How many rows, and nulls per column, the files a merge rewrites held: they leave the
    table's counts (the rows kept are counted again as the merge writes them)."""

    rows: int = 0
    nulls: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            self.nulls[name] = self.nulls.get(name, 0) + column.null_count


class Write:
    """What one write made, waiting to be committed on top of whatever version is latest."""

    def __init__(
        self,
        written: list[Written],
        stats: dict[str, Any],
        rows: int,
        schema: pa.Schema,
        partition_by: list[str],
        mode: str,
        lineage: dict[str, Any],
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.written, self.stats, self.rows, self.schema = written, stats, rows, schema
        self.partition_by, self.mode, self.lineage = partition_by, mode, lineage
        self.meta = meta or {}  # the writer's own keys, checked by the caller
        self.replaces: list[AddFile] = []  # a merge: the files it rewrote
        self.replaced: Removed | None = None  # … and the rows they held (for the statistics)

    def add_file(self, w: Written, when: int) -> AddFile:
        values = {c: _delta_value(w.partition.get(c)) for c in self.partition_by}
        return AddFile(w.relative, values, w.size, w.rows, Digest.parse(w.digest), when, w.stats or None)


def _delta_value(raw: str | None) -> str | None:
    """A Hive folder's value (URI-escaped by pyarrow) as the Delta log spells a partition value."""
    from urllib.parse import unquote

    if raw is None:
        return None
    value = unquote(raw)
    return None if value == NULL_PARTITION else value


def partitioning(base: Snapshot | None, partition_by: list[str], mode: str, name: str) -> list[str]:
    """An append goes into the table's partition columns; an overwrite may choose new ones."""
    if base is None or mode == "overwrite":
        return partition_by
    table = list(base.metadata.partition_columns)
    if partition_by and partition_by != table:
        raise InvalidArgumentError(
            f"dataset {name!r} is partitioned by {table}, not {partition_by}: append with the "
            'same partition_by (or none), or write with mode="overwrite"'
        )
    return table


def commit_body(
    name: str, new: Write, adds: list[AddFile], version: int, base: Snapshot | None, when: int
) -> bytes:
    append = new.mode in ("append", "merge") and base is not None
    old_schema = snapshot_schema(base) if base is not None else None
    if append and base is not None and list(base.metadata.partition_columns) != new.partition_by:
        raise SchemaConflictError(
            f"dataset {name!r} was re-partitioned by another writer meanwhile; nothing was committed",
            dataset=name,
        )
    schema = merged_schema(old_schema, new.schema, name) if append else new.schema
    delta = _delta_schema.delta_schema(schema)
    ntz = _delta_schema.needs_timestamp_ntz(delta)
    protocol: Protocol | None = None
    if base is None or (ntz and "timestampNtz" not in base.protocol.reader_features):
        protocol = (
            Protocol(3, 7, frozenset({"timestampNtz"}), frozenset({"timestampNtz"}))
            if ntz
            else Protocol(1, 2)
        )
        if base is not None and ntz:
            protocol = Protocol(
                3,
                7,
                base.protocol.reader_features | {"timestampNtz"},
                base.protocol.writer_features | {"timestampNtz"},
            )
    metadata: Metadata | None = None
    schema_string = json.dumps(delta, separators=(",", ":"))
    if (
        base is None
        or base.metadata.schema_string != schema_string
        or list(base.metadata.partition_columns) != new.partition_by
    ):
        metadata = Metadata(
            base.metadata.id if base else str(uuid.uuid4()),
            schema_string,
            _delta_schema.to_arrow(delta),
            tuple(new.partition_by),
            base.metadata.configuration if base else {},
            base.metadata.created_time if base else when,
        )
    removes = list(base.files.values()) if base is not None and not append else list(new.replaces)
    old_rows = snapshot_rows(base) if append and base is not None else 0
    old_stats = snapshot_stats(base) if append and base is not None else {}
    if new.replaced is not None:  # the rows a merge rewrote leave the counts
        old_rows -= new.replaced.rows
        old_stats = without_rows(old_stats, new.replaced)
    info = LakeletInfo(
        version=version + 1,
        mode=new.mode,
        created_at=datetime.fromtimestamp(when / 1000, UTC).isoformat(),
        creator=_config.current_user(),
        schema=schema,
        num_rows=old_rows + new.rows,
        stats=merged_stats(old_stats, old_rows, new.stats, new.rows),
        write={"rows": new.rows, "files": len(adds)},
        run_id=os.environ.get("LAKELET_RUN_ID"),
        lineage=new.lineage or _stage_lineage(),
        meta=new.meta,
    )
    return _delta_log.encode_commit(
        protocol, metadata, adds, removes, info, when, f"lakelet {LAKELET_VERSION}", new.partition_by
    )


def _stage_lineage() -> dict[str, Any]:
    pending = CURRENT.get()
    return {"stage_outputs": pending.implicit_prefix} if pending is not None else {}


def merged_stats(old: dict[str, Any], old_rows: int, new: dict[str, Any], new_rows: int) -> dict[str, Any]:
    """Column statistics after an append; a column absent from one side is null in its rows."""
    out = {}
    for column in [*new, *(c for c in old if c not in new)]:
        if column not in old:
            out[column] = {**new[column], "nulls": new[column]["nulls"] + old_rows}
        elif column not in new:
            out[column] = {**old[column], "nulls": old[column]["nulls"] + new_rows}
        else:
            out[column] = _stats.merge(old[column], new[column])
    return out


def without_rows(stats: dict[str, Any], rows: Removed) -> dict[str, Any]:
    """Statistics once ``rows`` are gone (a merge rewrote them): counts and nulls exact; min,
    max and the sample still bound and describe the values, removed ones included."""
    out = dict(stats)
    for column, nulls in rows.nulls.items():
        if column in out:
            out[column] = {
                **out[column],
                "count": max(0, out[column]["count"] - (rows.rows - nulls)),
                "nulls": max(0, out[column]["nulls"] - nulls),
            }
    return out
