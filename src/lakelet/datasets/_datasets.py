"""Datasets: versioned, partitioned Parquet as Delta Lake tables that any engine reads at a version.

Layout, the same under the lake root and on the remote (docs/datasets.md):

    datasets/<name>/<col>=<value>/…/part-<digest>.parquet   immutable, named by content
    datasets/<name>/_delta_log/<20 digits>.json              one commit per version, written once
    datasets/<name>/_delta_log/<20 digits>.checkpoint.parquet  every 10 commits (deltalake)

lakelet version N is Delta version N − 1. Every commit file read back goes through
``_delta_log.parse_commit`` and ``apply``: a peer with write access to the remote may
have written it, and a bad one is refused whole, with every version built on it.

A write streams the batches through ``pyarrow.dataset.write_dataset`` into a temp
folder (``_files``), renames each file under its digest, uploads the files, then
commits the version by creating its commit file with the store's conditional create.
Two writers that pick the same version: one wins; the other re-reads the table,
re-checks the schema and commits the next version (an append keeps both writers'
files; an overwrite removes what the winner added too).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakelet.core import _config, _faults
from lakelet.core._digest import Digest
from lakelet.core._names import validate_path_name
from lakelet.core._values import kind_of
from lakelet.core._version import __version__ as LAKELET_VERSION
from lakelet.core.errors import (
    CorruptRecordError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    SchemaConflictError,
)
from lakelet.datasets import _delta_log, _delta_schema, _stats, _upgrade
from lakelet.datasets._dataset import Dataset, snapshot_rows, snapshot_schema, snapshot_stats
from lakelet.datasets._delta_log import AddFile, LakeletInfo, Metadata, Protocol, Snapshot
from lakelet.datasets._files import NULL_PARTITION, Written, staging_dir, write_files
from lakelet.lake._mirror import MirroredFiles
from lakelet.lake._pending import CURRENT
from lakelet.remote._remote import parallel
from lakelet.storage._objects import sync_filesystem

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["Dataset", "Datasets"]

_MAX_COMMIT_ATTEMPTS = 50
CHECKPOINT_INTERVAL = 10
_MODES = ("append", "overwrite")


def _reader(data: Any) -> pa.RecordBatchReader:
    if isinstance(data, pa.RecordBatchReader):
        return data
    kind = kind_of(data)
    if kind == "pandas":
        table = pa.Table.from_pandas(data, preserve_index=False)
    elif kind == "polars":
        table = data.to_arrow()
    elif isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif isinstance(data, pa.Table):
        table = data
    else:
        raise InvalidArgumentError(
            f"write_dataset takes a pandas or Polars DataFrame, a pyarrow Table or a "
            f"RecordBatchReader, not {type(data).__module__}.{type(data).__qualname__}"
        )
    return table.to_reader()


_LOGICAL = {
    pa.large_string(): pa.string(),
    pa.string_view(): pa.string(),
    pa.large_binary(): pa.binary(),
    pa.binary_view(): pa.binary(),
}


def _normalized(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    """One physical type per logical type (Polars writes large_string, pandas string), so an
    append from either library meets the same schema."""
    fields = [f.with_type(_LOGICAL.get(f.type, f.type)) for f in reader.schema]
    target = pa.schema(fields, metadata=reader.schema.metadata)
    return reader if target.equals(reader.schema) else reader.cast(target)


def _merged_schema(old: pa.Schema | None, new: pa.Schema, name: str) -> pa.Schema:
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


class Datasets:
    """The dataset part of one lake: local folder, remote keys, Delta logs."""

    def __init__(self, context: LakeContext) -> None:
        self.context = context
        self.root = context.root / "datasets"
        self.mirrored = MirroredFiles(context)

    # reading the log

    def read_commit(self, name: str, version: int, base: Snapshot | None = None) -> Snapshot | None:
        """The table at Delta version ``version`` of ``name``, that commit applied on ``base``;
        None if there is none; CorruptRecordError if the commit file is invalid or does not fit
        ``base`` (it is then not kept here)."""
        return self.mirrored.read_immutable(
            _delta_log.commit_key(name, version),
            point="manifest-written",
            parse=lambda data, copy: _delta_log.apply(
                base, _delta_log.parse_commit(data, name, version, copy), name, copy
            ),
        )

    def _exists(self, name: str, version: int) -> bool:
        """Whether Delta version ``version`` is committed (valid or not: its number is taken)."""
        key = _delta_log.commit_key(name, version)
        if (self.context.root / key).is_file():
            return True
        syncer = self.context.syncer()
        return syncer is not None and syncer.remote.size(key) is not None

    def _checkpoint(self, name: str, version: int) -> Snapshot | None:
        return self.mirrored.read_immutable(
            _delta_log.checkpoint_key(name, version),
            parse=lambda data, copy: _delta_log.parse_checkpoint(data, name, version, copy),
        )

    def _last_checkpoint(self, name: str) -> int | None:
        data = self.mirrored.read(_delta_log.last_checkpoint_key(name), limit=1 << 16)
        return _delta_log.parse_last_checkpoint(data) if data is not None else None

    def create_commit(self, name: str, version: int, body: bytes) -> bool:
        """Create Delta version ``version`` of ``name``; False if another writer got there first."""
        created = self.mirrored.create(
            _delta_log.commit_key(name, version), body, point="manifest-written", read_only=True
        )
        if created:
            _faults.reached("dataset-committed")
        return created

    def open(self, name: str, version: int | None = None) -> Dataset:
        """The latest version of dataset ``name``, or ``version``; raises NotFoundError, or
        CorruptRecordError if a commit up to that version is invalid."""
        validate_path_name(name, "dataset name")
        wanted = version if version is not None else self.latest_version(name)
        if wanted < 1 or (version is not None and not self._exists(name, wanted - 1)):
            which = f"version {version} of " if version is not None else ""
            if _upgrade.manifest_versions(self, name):
                raise InvalidArgumentError(
                    f"dataset {name!r} is in lakelet's former manifest format: convert it to a Delta "
                    "table with `lakelet fsck --upgrade` (a write converts it too)"
                )
            raise NotFoundError(f"no {which}dataset {name!r} in this lake", name=name)
        return Dataset(self, name, self.snapshot(name, wanted - 1))

    def snapshot(self, name: str, delta_version: int) -> Snapshot:
        """The table at ``delta_version``: from the nearest checkpoint at or before it (or the
        first commit), then each commit after it through the parser."""
        snapshot, start = None, 0
        hint = self._last_checkpoint(name)
        for at in dict.fromkeys(c for c in (hint, delta_version - delta_version % CHECKPOINT_INTERVAL) if c):
            if at is not None and 0 < at <= delta_version:
                snapshot = self._checkpoint(name, at)
                if snapshot is not None:
                    start = at + 1
                    break
        for v in range(start, delta_version + 1):
            applied = self.read_commit(name, v, snapshot)
            if applied is None:
                key = _delta_log.commit_key(name, v)
                raise CorruptRecordError(
                    f"dataset {name!r}: commit {key} is missing, so version {v + 1} and later cannot be read",
                    record=key,
                )
            snapshot = applied
        assert snapshot is not None  # delta_version >= 0: the loop ran or a checkpoint was read
        if start == delta_version + 1:  # a checkpoint keeps no commitInfo: the commit has it
            last = self.mirrored.read_immutable(
                _delta_log.commit_key(name, delta_version),
                parse=lambda data, copy: _delta_log.parse_commit(data, name, delta_version, copy),
            )
            if last is not None:
                snapshot = dataclasses.replace(snapshot, info=last.info, timestamp=last.timestamp)
        return snapshot

    def url(self, name: str) -> str:
        """Where a Delta reader opens dataset ``name``: its folder on the remote (the remote's own
        URL scheme, as delta-rs, DuckDB and Spark take it), else this machine's."""
        validate_path_name(name, "dataset name")
        if self.latest_version(name) < 1:
            raise NotFoundError(f"no dataset {name!r} in this lake", name=name)
        syncer = self.context.syncer()
        if syncer is None:
            return (self.root / name).resolve().as_uri()
        return f"{syncer.remote.url}/datasets/{name}"

    def upgrade_all(self) -> list[str]:
        """Convert every dataset still in the former manifest format; returns their names."""
        return [name for name in self.names() if _upgrade.upgrade(self, name)]

    def latest_version(self, name: str) -> int:
        """The newest committed lakelet version (0: none), asking the remote past what is local."""
        return self._latest(name) + 1

    def _latest(self, name: str) -> int:
        folder = self.root / name / "_delta_log"
        local = (
            [int(p.name[:20]) for p in folder.glob("*.json") if _delta_log.is_commit_file(p.name)]
            if folder.is_dir()
            else []
        )
        version = max([*local, self._last_checkpoint(name) or -1], default=-1)
        while self._exists(name, version + 1):
            version += 1
        return version

    def names(self) -> list[str]:
        """The datasets with a Delta log here or on the remote; a key whose dataset name is not
        valid (a peer's) names none."""
        keys = self.mirrored.keys("datasets/", ".json", recursive=True)
        return sorted(
            name
            for name in {
                re.split("/_delta_log/|/_manifests/", k.removeprefix("datasets/"))[0]
                for k in keys
                if "/_delta_log/" in k or "/_manifests/" in k
            }
            if _is_dataset_name(name)
        )

    # writing

    def write(
        self,
        name: str,
        data: Any,
        partition_by: list[str],
        mode: str,
        compression: str,
        lineage: dict[str, Any] | None = None,
    ) -> Dataset:
        validate_path_name(name, "dataset name")
        if mode not in _MODES:
            raise InvalidArgumentError(f'mode must be "append" or "overwrite", not {mode!r}')
        reader = _normalized(_reader(data))
        latest = self._latest(name)
        # everything is checked before a byte is written
        base = self.snapshot(name, latest) if latest >= 0 else None
        if (base is None or (base.info and _upgrade.UPGRADED in base.info.lineage)) and _upgrade.upgrade(
            self, name
        ):  # a dataset in the former manifest format (or its conversion cut short): converted first
            latest = self._latest(name)
            base = self.snapshot(name, latest)
        if base is not None:
            base.protocol.check_writable(name)
        partition_by = _partitioning(base, partition_by, mode, name)
        for column in partition_by:
            if reader.schema.get_field_index(column) < 0:
                raise InvalidArgumentError(f"partition column {column!r} is not in the data")
        if mode == "append" and base is not None:
            _merged_schema(snapshot_schema(base), reader.schema, name)
        try:
            _delta_schema.delta_schema(reader.schema)
        except TypeError as e:
            raise InvalidArgumentError(f"dataset {name!r}: {e}") from None
        written, stats, rows = write_files(
            reader, staging_dir(self.context.root), self.root / name, partition_by, compression
        )
        self._upload(name, written)
        new = _Write(written, stats, rows, reader.schema, partition_by, mode, lineage or {})
        return self._commit(name, new, latest, base)

    def _upload(self, name: str, written: list[Written]) -> None:
        sync_filesystem(self.context.root)  # the files are durable before a commit names them
        syncer = self.context.syncer()
        if syncer is None:
            return
        parallel(
            lambda w: syncer.remote.upload(self.root / name / w.relative, f"datasets/{name}/{w.relative}"),
            written,
            syncer.remote.transfers,
        )

    def _commit(self, name: str, new: _Write, latest: int, base: Snapshot | None) -> Dataset:
        when = int(datetime.now(UTC).timestamp() * 1000)
        adds = [new.add_file(w, when) for w in new.written]
        for _ in range(_MAX_COMMIT_ATTEMPTS):
            version = latest + 1
            body = _commit_body(name, new, adds, version, base, when)
            if self.create_commit(name, version, body):
                commit = _delta_log.parse_commit(body, name, version)
                snapshot = _delta_log.apply(base, commit, name)
                if version % CHECKPOINT_INTERVAL == 0 and version > 0:
                    self._write_checkpoint(name, version)
                _note_in_stage(name, version + 1, new.rows)
                return Dataset(self, name, snapshot)
            latest = self._latest(name)  # another writer committed: rebase on theirs
            base = self.snapshot(name, latest)
            base.protocol.check_writable(name)
        raise InvalidArgumentError(f"dataset {name!r}: too many concurrent writers, try again")

    def _write_checkpoint(self, name: str, version: int) -> None:
        """Delta version ``version`` as a Parquet checkpoint, so that no reader (lakelet's or
        another engine's) replays every commit: deltalake writes it from the local log, then
        it is created on the remote (a checkpoint is the same for every writer: the first
        one stays) and ``_last_checkpoint``, a hint every reader checks, is replaced."""
        import deltalake

        deltalake.DeltaTable(str(self.root / name), version=version).create_checkpoint()
        syncer = self.context.syncer()
        if syncer is None:
            return
        local = self.context.root / _delta_log.checkpoint_key(name, version)
        with contextlib.suppress(FileExistsError):
            syncer.remote.create(_delta_log.checkpoint_key(name, version), local.read_bytes())
        hint = (self.context.root / _delta_log.last_checkpoint_key(name)).read_bytes()
        syncer.remote.put_bytes(_delta_log.last_checkpoint_key(name), hint)


class _Write:
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
    ) -> None:
        self.written, self.stats, self.rows, self.schema = written, stats, rows, schema
        self.partition_by, self.mode, self.lineage = partition_by, mode, lineage

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


def _partitioning(base: Snapshot | None, partition_by: list[str], mode: str, name: str) -> list[str]:
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


def _commit_body(
    name: str, new: _Write, adds: list[AddFile], version: int, base: Snapshot | None, when: int
) -> bytes:
    append = new.mode == "append" and base is not None
    old_schema = snapshot_schema(base) if base is not None else None
    if append and base is not None and list(base.metadata.partition_columns) != new.partition_by:
        raise SchemaConflictError(
            f"dataset {name!r} was re-partitioned by another writer meanwhile; nothing was committed",
            dataset=name,
        )
    schema = _merged_schema(old_schema, new.schema, name) if append else new.schema
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
    removes = list(base.files.values()) if base is not None and not append else []
    old_rows = snapshot_rows(base) if append and base is not None else 0
    old_stats = snapshot_stats(base) if append and base is not None else {}
    info = LakeletInfo(
        version=version + 1,
        mode=new.mode,
        created_at=datetime.fromtimestamp(when / 1000, UTC).isoformat(),
        creator=_config.current_user(),
        schema=schema,
        num_rows=old_rows + new.rows,
        stats=_merged_stats(old_stats, old_rows, new.stats, new.rows),
        write={"rows": new.rows, "files": len(adds)},
        run_id=os.environ.get("LAKELET_RUN_ID"),
        lineage=new.lineage or _stage_lineage(),
    )
    return _delta_log.encode_commit(
        protocol, metadata, adds, removes, info, when, f"lakelet {LAKELET_VERSION}", new.partition_by
    )


def _stage_lineage() -> dict[str, Any]:
    pending = CURRENT.get()
    return {"stage_outputs": pending.implicit_prefix} if pending is not None else {}


def _is_dataset_name(name: str) -> bool:
    try:
        validate_path_name(name, "dataset name")
    except InvalidNameError:
        return False
    return True


def _note_in_stage(name: str, version: int, rows: int) -> None:
    """A dataset written inside a stage is one of its outputs, in its lineage record."""
    pending = CURRENT.get()
    if pending is not None:
        pending.datasets.append({"dataset": name, "version": version, "rows": rows})


def _merged_stats(old: dict[str, Any], old_rows: int, new: dict[str, Any], new_rows: int) -> dict[str, Any]:
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
