"""Datasets: versioned, partitioned Parquet that any engine can read straight from the folder.

Layout, the same under the lake root and on the remote (docs/datasets.md):

    datasets/<name>/<col>=<value>/…/part-<digest>.parquet   immutable, named by content
    datasets/<name>/_manifests/<version>.json                one per version, written once

Every manifest read back goes through ``_manifest.parse``: a peer with write
access to the remote may have written it, and a bad one is refused whole.

A write streams the batches through ``pyarrow.dataset.write_dataset`` into a
temp folder (``_dataset_files``: statistics from the batches' null counts and
the writer's Parquet metadata), renames each file under its digest, uploads
the files, then commits the version by creating its manifest with a
conditional create. Two writers that pick the
same version number: one wins; the other re-reads the winner's manifest,
re-checks the schema and commits the next number (an append keeps both
writers' files).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as pads

from lakelet.core import _config, _faults
from lakelet.core._digest import Digest
from lakelet.core._names import validate_path_name
from lakelet.core._values import kind_of
from lakelet.core.errors import (
    CorruptRecordError,
    IntegrityError,
    InvalidArgumentError,
    InvalidNameError,
    NotFoundError,
    SchemaConflictError,
)
from lakelet.datasets import _manifest, _stats
from lakelet.datasets._files import Written, partition_value, staging_dir, write_files
from lakelet.datasets._manifest import Manifest, ManifestFile, manifest_key
from lakelet.lake._mirror import MirroredFiles
from lakelet.lake._pending import CURRENT
from lakelet.remote._remote import parallel
from lakelet.storage._objects import sync_filesystem, write_blob

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["Dataset", "Datasets"]

_MAX_COMMIT_ATTEMPTS = 50


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
    """The dataset part of one lake: local folder, remote keys, manifests."""

    def __init__(self, context: LakeContext) -> None:
        self.context = context
        self.root = context.root / "datasets"
        self._files = MirroredFiles(context)

    def read_manifest(self, name: str, version: int) -> Manifest | None:
        """Version ``version`` of ``name``; None if there is none; CorruptRecordError if its
        manifest is invalid (it is then not kept here)."""
        return self._files.read_immutable(
            manifest_key(name, version),
            point="manifest-written",
            parse=lambda data, copy: _manifest.parse(data, name, version, copy),
        )

    def open(self, name: str, version: int | None = None) -> Dataset:
        """The latest version of dataset ``name``, or ``version``; raises NotFoundError, or
        CorruptRecordError if that version's manifest is invalid."""
        validate_path_name(name, "dataset name")
        wanted = version if version is not None else self.latest_version(name)
        manifest = self.read_manifest(name, wanted) if wanted else None
        if manifest is None:
            which = f"version {version} of " if version is not None else ""
            raise NotFoundError(f"no {which}dataset {name!r} in this lake", name=name)
        return Dataset(self, name, manifest)

    def latest_version(self, name: str) -> int:
        """The newest committed version (0: none), asking the remote past what is local."""
        folder = self.root / name / "_manifests"
        local = (
            [int(p.stem) for p in folder.glob("*.json") if _manifest.is_version_file(p.name)]
            if folder.is_dir()
            else []
        )
        version = max(local, default=0)
        while self._taken(name, version + 1):
            version += 1
        return version

    def _taken(self, name: str, version: int) -> bool:
        try:
            return self.read_manifest(name, version) is not None
        except CorruptRecordError:
            return True  # an invalid manifest still holds its number: the next commit is past it

    def names(self) -> list[str]:
        """The datasets with a manifest here or on the remote; a key whose dataset name is not
        valid (a peer's) names none."""
        keys = self._files.keys("datasets/", ".json", recursive=True)
        return sorted(
            name
            for name in {
                k.removeprefix("datasets/").split("/_manifests/")[0] for k in keys if "/_manifests/" in k
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
        meta: dict[str, Any] | None = None,
    ) -> Dataset:
        validate_path_name(name, "dataset name")
        if mode not in ("append", "overwrite"):
            raise InvalidArgumentError(f'mode must be "append" or "overwrite", not {mode!r}')
        reader = _normalized(_reader(data))
        latest = self.latest_version(name)
        # an append builds on the latest version (refused if its manifest is invalid); an
        # overwrite reads none, so it can replace a version whose manifest is bad
        previous = self.read_manifest(name, latest) if latest and mode == "append" else None
        if mode == "append":  # checked before a byte is written
            _merged_schema(previous.schema if previous else None, reader.schema, name)
        for column in partition_by:
            if reader.schema.get_field_index(column) < 0:
                raise InvalidArgumentError(f"partition column {column!r} is not in the data")
        written, stats, rows = write_files(
            reader, staging_dir(self.context.root), self.root / name, partition_by, compression
        )
        self._upload(name, written)
        return self._commit(name, written, stats, rows, reader.schema, mode, latest, previous, meta or {})

    def _upload(self, name: str, written: list[Written]) -> None:
        sync_filesystem(self.context.root)  # the files are durable before a manifest names them
        syncer = self.context.syncer()
        if syncer is None:
            return
        parallel(
            lambda w: syncer.remote.upload(self.root / name / w.relative, f"datasets/{name}/{w.relative}"),
            written,
            syncer.remote.transfers,
        )

    def _commit(
        self,
        name: str,
        written: list[Written],
        stats: dict[str, Any],
        rows: int,
        schema: pa.Schema,
        mode: str,
        latest: int,
        previous: Manifest | None,
        meta: dict[str, Any],
    ) -> Dataset:
        new_files = tuple(
            ManifestFile(w.relative, Digest.parse(w.digest), w.size, w.rows, w.partition) for w in written
        )
        for _ in range(_MAX_COMMIT_ATTEMPTS):
            version = latest + 1
            base = previous if mode == "append" else None
            manifest = Manifest(
                dataset=name,
                version=version,
                parent=latest or None,
                mode=mode,
                created_at=datetime.now(UTC).isoformat(),
                creator=_config.current_user(),
                schema=_merged_schema(base.schema if base else None, schema, name),
                files=(base.files if base else ()) + new_files,
                num_rows=(base.num_rows if base else 0) + rows,
                stats=_merged_stats(base.stats if base else {}, base.num_rows if base else 0, stats, rows),
                write={"rows": rows, "files": len(new_files)},
                meta=meta,
            )
            if self._create_manifest(manifest):
                _note_in_stage(name, version, rows)
                return Dataset(self, name, manifest)
            latest = self.latest_version(name)  # another writer committed: rebase on theirs
            previous = self.read_manifest(name, latest) if mode == "append" else None
        raise InvalidArgumentError(f"dataset {name!r}: too many concurrent writers, try again")

    def _create_manifest(self, manifest: Manifest) -> bool:
        if self._files.create(manifest.key, manifest.encode(), point="manifest-written", read_only=True):
            _faults.reached("dataset-committed")
            return True
        return False


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


class Dataset:
    """One version of a dataset."""

    def __init__(self, store: Datasets, name: str, record: Manifest) -> None:
        self._store = store
        self.name = name
        self.record = record  # the validated manifest

    def __repr__(self) -> str:
        return f"<Dataset {self.name} v{self.version}: {self.num_rows} rows, {len(self.record.files)} files>"

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as JSON values (docs/datasets.md)."""
        return self.record.to_json()

    @property
    def version(self) -> int:
        return self.record.version

    def versions(self) -> list[int]:
        return list(range(1, self._store.latest_version(self.name) + 1))

    @property
    def files(self) -> list[dict[str, Any]]:
        """The version's files: path (under the dataset folder), digest, size, rows, partition."""
        return [f.to_json() for f in self.record.files]

    @property
    def folder(self) -> Path:
        return self._store.root / self.name

    @property
    def schema(self) -> pa.Schema:
        return self.record.schema

    @property
    def num_rows(self) -> int:
        return self.record.num_rows

    def stats(self) -> dict[str, dict[str, Any]]:
        return {c: _stats.summary(s) for c, s in self.record.stats.items()}

    @property
    def meta(self) -> dict[str, Any]:
        """The writer's own keys for this version (``write_dataset(meta=...)``)."""
        return dict(self.record.meta)

    def _repr_html_(self) -> str:
        from lakelet.datasets._display import dataset_card

        return dataset_card(self).html()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from lakelet.datasets._display import dataset_card

        dataset_card(self).pretty(p, cycle)

    def summary(self) -> dict[str, Any]:
        """What a listing shows of this version: name, version, rows, files, bytes, last_write
        (when it was committed) and creator."""
        return {
            "name": self.name,
            "version": self.version,
            "rows": self.num_rows,
            "files": len(self.record.files),
            "bytes": sum(f.size for f in self.record.files),
            "last_write": self.record.created_at,
            "creator": self.record.creator,
        }

    def scanner(self, filter: Any = None, columns: list[str] | None = None) -> pads.Scanner:  # noqa: A002
        """A pyarrow Scanner over this version; files pruned by partition first, fetched if remote."""
        files = self.record.files
        partition_fields = _partition_fields(files, self.schema)
        paths = [str(self.folder / f.relative) for f in files]
        expressions = [_partition_expression(f.partition, partition_fields) for f in files]
        data_schema = self.schema
        fragments = pads.FileSystemDataset.from_paths(
            paths,
            schema=data_schema,
            format=pads.ParquetFileFormat(),
            filesystem=pa.fs.LocalFileSystem(),
            partitions=expressions,
        )
        needed = (
            {frag.path for frag in fragments.get_fragments(filter=filter)}
            if filter is not None
            else set(paths)
        )
        for f, path in zip(files, paths, strict=True):
            if path in needed:
                self._ensure_local(f, Path(path))
        if filter is not None:
            kept = [(p, e) for p, e in zip(paths, expressions, strict=True) if p in needed]
            fragments = pads.FileSystemDataset.from_paths(
                [p for p, _ in kept],
                schema=data_schema,
                format=pads.ParquetFileFormat(),
                filesystem=pa.fs.LocalFileSystem(),
                partitions=[e for _, e in kept],
            )
        return fragments.scanner(filter=filter, columns=columns)

    def to_arrow(self, filter: Any = None, columns: list[str] | None = None) -> pa.Table:  # noqa: A002
        return self.scanner(filter=filter, columns=columns).to_table()

    def to_pandas(self, filter: Any = None, columns: list[str] | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return self.to_arrow(filter=filter, columns=columns).to_pandas(**kwargs)

    def _ensure_local(self, entry: ManifestFile, path: Path) -> None:
        if path.is_file():
            return
        syncer = self._store.context.syncer()
        if syncer is None:
            raise NotFoundError(f"dataset {self.name!r}: {entry.relative} is missing locally")
        # The manifest's path stays under the folder (_manifest.parse); a symlink on the way,
        # made here, could still lead out: nothing fetched is written through one.
        if not path.resolve().is_relative_to(self.folder.resolve()):
            raise IntegrityError(
                f"dataset {self.name!r}: {path} leads outside {self.folder} (through a symlink): "
                "not fetching it there",
                digest=str(entry.digest),
            )
        expected = entry.digest
        with contextlib.closing(syncer.remote.open_file(f"datasets/{self.name}/{entry.relative}")) as r:
            blob = write_blob(
                r, self._store.context.tmp, lambda d: path if d == expected else path.with_suffix(".corrupt")
            )
        if blob.digest != expected:
            blob.path.unlink(missing_ok=True)
            raise IntegrityError(
                f"dataset {self.name!r}: remote copy of {entry.relative} is corrupt", digest=str(expected)
            )


def _partition_fields(files: tuple[ManifestFile, ...], schema: pa.Schema) -> dict[str, pa.DataType]:
    names = {k for f in files for k in f.partition}
    return {n: schema.field(n).type for n in names if schema.get_field_index(n) >= 0}


def _partition_expression(partition: dict[str, str], fields: dict[str, pa.DataType]) -> pads.Expression:
    expression = pads.scalar(True)
    for column, raw in partition.items():
        scalar = partition_value(raw, fields.get(column, pa.string()))
        expression = expression & (
            pads.field(column).is_null() if scalar is None else pads.field(column) == scalar
        )
    return expression
