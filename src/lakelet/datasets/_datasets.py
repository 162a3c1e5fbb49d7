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
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakelet.core import _faults
from lakelet.core._names import validate_path_name
from lakelet.core._progress import SILENT, Progress, begin_phase
from lakelet.core._values import kind_of
from lakelet.core.errors import (
    CorruptRecordError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
)
from lakelet.datasets import (
    _commits,
    _delta_checkpoint,
    _delta_log,
    _delta_schema,
    _merge,
    _remembered,
    _upgrade,
)
from lakelet.datasets._dataset import Dataset, snapshot_schema
from lakelet.datasets._delta_log import Snapshot
from lakelet.datasets._files import Written, staging_dir, write_files
from lakelet.lake._mirror import MirroredFiles
from lakelet.lake._pending import CURRENT
from lakelet.remote._remote import parallel
from lakelet.storage._objects import sync_filesystem

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["Dataset", "Datasets"]

_MAX_COMMIT_ATTEMPTS = 50
CHECKPOINT_INTERVAL = 10
_MODES = ("append", "overwrite", "merge")
_MAX_MERGE_ATTEMPTS = 10


def _reader(data: Any) -> tuple[pa.RecordBatchReader, int | None]:
    """``data`` as a stream of batches, and its size in memory when it is known before reading
    (a stream's is not)."""
    if isinstance(data, pa.RecordBatchReader):
        return data, None
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
    return table.to_reader(), table.nbytes


def _counted(
    reader: pa.RecordBatchReader, total: int | None, progress: Progress, growing: bool = False
) -> pa.RecordBatchReader:
    """``reader``, telling ``progress`` the bytes of each batch as the writer takes it: the
    batches as given, before any cast, so that they add up to ``total`` (a table's nbytes).
    ``growing``: the total grows with each batch (a merge's rows, kept and new, are known as
    they are read)."""
    if progress is SILENT:
        return reader
    if total is not None:
        progress.add_total(total)

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            if growing:
                progress.add_total(batch.nbytes)
            yield batch
            progress.advance(batch.nbytes)

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


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
            parse=lambda data, copy: _delta_checkpoint.parse_checkpoint(data, name, version, copy),
        )

    def _last_checkpoint(self, name: str) -> int | None:
        data = self.mirrored.read(_delta_log.last_checkpoint_key(name), limit=1 << 16)
        return _delta_checkpoint.parse_last_checkpoint(data) if data is not None else None

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
        """The table at ``delta_version``: from the table this process last built if that is at
        most that version (and its files are unchanged), else from the nearest checkpoint at or
        before it (or the first commit), then each commit after it through the parser."""
        snapshot = _remembered.recall(self.context.root, name, delta_version, CHECKPOINT_INTERVAL)
        if snapshot is not None and snapshot.version == delta_version:
            return snapshot
        if snapshot is not None:
            for v in range(snapshot.version + 1, delta_version + 1):
                applied = self.read_commit(name, v, snapshot)
                if applied is None:
                    break
                snapshot = applied
            if snapshot.version == delta_version:
                _remembered.remember(self.context.root, name, snapshot, CHECKPOINT_INTERVAL)
                return snapshot
        snapshot = self._read_snapshot(name, delta_version)
        _remembered.remember(self.context.root, name, snapshot, CHECKPOINT_INTERVAL)
        return snapshot

    def _read_snapshot(self, name: str, delta_version: int) -> Snapshot:
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
        # From the checkpoint hint on, commit by commit (one stat each): listing a log of
        # 10,000 commits cost more than the rest of a write. Only a log without the hint (fewer
        # than ten commits, or another writer's) is listed.
        version = self._last_checkpoint(name) or -1
        folder = self.root / name / "_delta_log"
        if version < 0 and folder.is_dir():
            local = [int(p.name[:20]) for p in folder.glob("*.json") if _delta_log.is_commit_file(p.name)]
            version = max(local, default=-1)
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
        keys: list[str] | None = None,
        meta: dict[str, Any] | None = None,
        progress: Progress = SILENT,
    ) -> Dataset:
        """``progress`` is told the bytes of the data as they are written (the table's size in
        memory; a stream's total is not known), then, in a lake with a remote, the bytes of the
        files as they are uploaded (a new phase, counted from zero)."""
        validate_path_name(name, "dataset name")
        if mode not in _MODES:
            raise InvalidArgumentError(f'mode must be "append", "overwrite" or "merge", not {mode!r}')
        if (mode == "merge") != bool(keys):
            raise InvalidArgumentError(
                'mode="merge" needs keys=[...], the columns that identify a row'
                if mode == "merge"
                else 'keys=[...] go with mode="merge" only'
            )
        raw, total = _reader(data)
        if mode == "merge":
            reader = _normalized(raw)
            return self._merge(
                name,
                reader.read_all(),
                _merge.checked_keys(keys, reader.schema, name),
                partition_by,
                compression,
                lineage,
                meta,
                progress,
            )
        reader = _normalized(_counted(raw, total, progress))
        # everything is checked before a byte is written
        latest, base = self._base(name)
        partition_by = self._checked(name, base, reader.schema, partition_by, mode)
        written, stats, rows = write_files(
            reader, staging_dir(self.context.root), self.root / name, partition_by, compression, name
        )
        self._upload(name, written, progress)
        new = _commits.Write(written, stats, rows, reader.schema, partition_by, mode, lineage or {}, meta)
        done = self._commit(name, new, latest, base, _MAX_COMMIT_ATTEMPTS)
        if done is None:
            raise InvalidArgumentError(f"dataset {name!r}: too many concurrent writers, try again")
        return done

    def _base(self, name: str) -> tuple[int, Snapshot | None]:
        """The latest Delta version and the table at it (None: no table yet), a dataset in the
        former manifest format (or its conversion cut short) converted first."""
        latest = self._latest(name)
        base = self.snapshot(name, latest) if latest >= 0 else None
        if (base is None or (base.info and _upgrade.UPGRADED in base.info.lineage)) and _upgrade.upgrade(
            self, name
        ):
            latest = self._latest(name)
            base = self.snapshot(name, latest)
        if base is not None:
            base.protocol.check_writable(name)
        return latest, base

    def _checked(
        self, name: str, base: Snapshot | None, schema: pa.Schema, partition_by: list[str], mode: str
    ) -> list[str]:
        """The partition columns of the write, once its schema is known to fit the table's."""
        partition_by = _commits.partitioning(base, partition_by, mode, name)
        for column in partition_by:
            if schema.get_field_index(column) < 0:
                raise InvalidArgumentError(f"partition column {column!r} is not in the data")
        if mode != "overwrite" and base is not None:
            _commits.merged_schema(snapshot_schema(base), schema, name)
        try:
            _delta_schema.delta_schema(schema)
        except TypeError as e:
            raise InvalidArgumentError(f"dataset {name!r}: {e}") from None
        return partition_by

    def _merge(
        self,
        name: str,
        table: pa.Table,
        keys: list[str],
        partition_by: list[str],
        compression: str,
        lineage: dict[str, Any] | None,
        meta: dict[str, Any] | None = None,
        progress: Progress = SILENT,
    ) -> Dataset:
        """Replace the rows whose keys match and append the rest, as one commit removing the
        files it rewrote. A writer that committed meanwhile may have added rows with these keys
        or rewritten these files: the merge is then computed again on top of it, never rebased."""
        _merge.check_unique(table, keys, name)
        for attempt in range(_MAX_MERGE_ATTEMPTS):
            if attempt:
                begin_phase(progress, "writing")  # the merge computed again: counted from zero
            latest, base = self._base(name)
            if base is not None:
                _merge.checked_keys(keys, snapshot_schema(base), name)
            parts = self._checked(name, base, table.schema, partition_by, "merge")
            schema = _commits.merged_schema(snapshot_schema(base) if base else None, table.schema, name)
            dataset = Dataset(self, name, base) if base is not None else None
            replaces = _merge.touched(dataset, table, keys) if dataset is not None else []
            replaced = _commits.Removed()
            written: list[Written] = []
            stats: dict[str, Any] = {}
            rows = 0
            for stream in _merge.rewritten(dataset, replaces, table, keys, schema, replaced):
                more, more_stats, more_rows = write_files(
                    _counted(stream, None, progress, growing=True),
                    staging_dir(self.context.root),
                    self.root / name,
                    parts,
                    compression,
                    name,
                )
                written, rows = written + more, rows + more_rows
                stats = _commits.merged_stats(stats, rows - more_rows, more_stats, more_rows)
            self._upload(name, written, progress)
            new = _commits.Write(written, stats, rows, schema, parts, "merge", lineage or {}, meta)
            new.replaces, new.replaced = replaces, replaced
            done = self._commit(name, new, latest, base, 1)
            if done is not None:
                return done
        raise InvalidArgumentError(
            f"dataset {name!r}: other writers changed it during each of {_MAX_MERGE_ATTEMPTS} merge "
            "attempts; nothing was merged, try again"
        )

    def _upload(self, name: str, written: list[Written], progress: Progress = SILENT) -> None:
        sync_filesystem(self.context.root)  # the files are durable before a commit names them
        syncer = self.context.syncer()
        if syncer is None:
            return
        begin_phase(progress, "uploading")
        progress.add_total(sum(w.size for w in written))

        def upload(w: Written) -> None:
            syncer.remote.upload(self.root / name / w.relative, f"datasets/{name}/{w.relative}")
            progress.advance(w.size)  # a file at a time: the store takes it whole

        parallel(upload, written, syncer.remote.transfers)

    def _commit(
        self, name: str, new: _commits.Write, latest: int, base: Snapshot | None, attempts: int
    ) -> Dataset | None:
        """Commit ``new`` as the next version, rebasing on another writer's commit up to
        ``attempts`` times; None if every attempt lost the race."""
        when = int(datetime.now(UTC).timestamp() * 1000)
        adds = [new.add_file(w, when) for w in new.written]
        for attempt in range(attempts):
            if attempt:
                latest = self._latest(name)  # another writer committed: rebase on theirs
                base = self.snapshot(name, latest)
                base.protocol.check_writable(name)
            version = latest + 1
            body = _commits.commit_body(name, new, adds, version, base, when)
            if self.create_commit(name, version, body):
                commit = _delta_log.parse_commit(body, name, version)
                snapshot = _delta_log.apply(base, commit, name)
                if version % CHECKPOINT_INTERVAL == 0 and version > 0:
                    self._write_checkpoint(name, version)
                _remembered.remember(self.context.root, name, snapshot, CHECKPOINT_INTERVAL)
                _note_in_stage(name, version + 1, new.rows)
                return Dataset(self, name, snapshot)
        return None

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
