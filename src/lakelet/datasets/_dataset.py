"""One version of a dataset: its files, schema, rows, statistics, and reading it with pyarrow."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as pads

from lakelet.core.errors import IntegrityError, NotFoundError
from lakelet.datasets import _delta_schema, _stats
from lakelet.datasets._delta_log import AddFile, Snapshot
from lakelet.storage._objects import write_blob

if TYPE_CHECKING:
    from lakelet.datasets._datasets import Datasets

__all__ = ["Dataset", "snapshot_schema", "snapshot_stats"]


def snapshot_schema(snapshot: Snapshot) -> pa.Schema:
    """The exact Arrow schema lakelet wrote, else the one the Delta types give."""
    return snapshot.info.schema if snapshot.info is not None else snapshot.metadata.schema


def snapshot_rows(snapshot: Snapshot) -> int:
    if snapshot.info is not None:
        return snapshot.info.num_rows
    return sum(f.rows or 0 for f in snapshot.files.values())


def snapshot_stats(snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    """lakelet's statistics of the version; for a commit another writer made, counts and bounds
    summed from the per-file statistics of the Delta log (no sample: no quantiles)."""
    if snapshot.info is not None:
        return snapshot.info.stats
    rows = snapshot_rows(snapshot)
    parsed = [_file_stats(add.stats) for add in snapshot.files.values()]
    out: dict[str, dict[str, Any]] = {}
    for f in snapshot_schema(snapshot):
        nulls = sum(_count_of(p.get("nullCount"), f.name) for p in parsed)
        lows = [v for p in parsed if (v := _bound_of(p.get("minValues"), f.name)) is not None]
        highs = [v for p in parsed if (v := _bound_of(p.get("maxValues"), f.name)) is not None]
        complete = len(lows) == len(highs) == len(parsed)  # a file without bounds may hold anything
        out[f.name] = {
            "type": str(f.type),
            "count": max(0, rows - nulls),
            "nulls": nulls,
            "min": _extreme(min, lows) if complete else None,
            "max": _extreme(max, highs) if complete else None,
        }
    return out


def _file_stats(text: str | None) -> dict[str, Any]:
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:  # the parser already refused a commit whose stats are not JSON
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _count_of(values: Any, column: str) -> int:
    value = values.get(column) if isinstance(values, dict) else None
    return value if type(value) is int and value >= 0 else 0


def _bound_of(values: Any, column: str) -> Any:
    value = values.get(column) if isinstance(values, dict) else None
    return value if type(value) in (int, float, str) else None


def _extreme(pick: Any, values: list[Any]) -> Any:
    try:
        return pick(values) if values else None
    except TypeError:  # bounds of different types (a peer's): none
        return None


class Dataset:
    """One version of a dataset: a Delta table at Delta version ``version - 1``."""

    def __init__(self, store: Datasets, name: str, snapshot: Snapshot) -> None:
        self._store = store
        self.name = name
        self.snapshot = snapshot

    def __repr__(self) -> str:
        return (
            f"<Dataset {self.name} v{self.version}: {self.num_rows} rows, {len(self.snapshot.files)} files>"
        )

    @property
    def version(self) -> int:
        """lakelet's version: Delta's plus one."""
        return self.snapshot.version + 1

    def versions(self) -> list[int]:
        return list(range(1, self._store.latest_version(self.name) + 1))

    @property
    def folder(self) -> Path:
        """The Delta table's folder on this machine (any Delta reader opens it)."""
        return self._store.root / self.name

    @property
    def files(self) -> list[str]:
        """The paths of this version's Parquet files, like ``pyarrow.dataset.Dataset.files``."""
        return [str(self.folder / path) for path in self.snapshot.files]

    @property
    def file_details(self) -> list[dict[str, Any]]:
        """Per file: path (under the folder), digest (lakelet's files), size, rows, partition,
        modification time."""
        return [
            {
                "relative": f.path,
                "digest": str(f.digest) if f.digest else None,
                "size": f.size,
                "rows": f.rows,
                "partition": dict(f.partition),
                "modified": f.modification_time,  # ms since the epoch, as Delta says
            }
            for f in self.snapshot.files.values()
        ]

    @property
    def commit_info(self) -> dict[str, Any]:
        """What lakelet wrote in this version's ``commitInfo`` (empty if another writer made it)."""
        return self.snapshot.info.to_json() if self.snapshot.info else {}

    @property
    def schema(self) -> pa.Schema:
        return snapshot_schema(self.snapshot)

    @property
    def partition_by(self) -> list[str]:
        return list(self.snapshot.metadata.partition_columns)

    @property
    def num_rows(self) -> int:
        return snapshot_rows(self.snapshot)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {c: _stats.summary(s) for c, s in snapshot_stats(self.snapshot).items()}

    @property
    def meta(self) -> dict[str, Any]:
        """The writer's own keys for this version (``write_dataset(meta=...)``)."""
        return dict(self.snapshot.info.meta) if self.snapshot.info else {}

    def _repr_html_(self) -> str:
        from lakelet.datasets._display import dataset_card

        return dataset_card(self).html()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from lakelet.datasets._display import dataset_card

        dataset_card(self).pretty(p, cycle)

    def summary(self) -> dict[str, Any]:
        """What a listing shows of this version: name, version, rows, files, bytes, last_write
        (when it was committed) and creator."""
        info = self.snapshot.info
        stamp = self.snapshot.timestamp
        when = datetime.fromtimestamp(stamp / 1000, UTC).isoformat() if stamp else ""
        return {
            "name": self.name,
            "version": self.version,
            "rows": self.num_rows,
            "files": len(self.snapshot.files),
            "bytes": sum(f.size for f in self.snapshot.files.values()),
            "last_write": info.created_at if info else when,
            "creator": info.creator if info else "",
        }

    def scanner(self, filter: Any = None, columns: list[str] | None = None) -> pads.Scanner:  # noqa: A002
        """A pyarrow Scanner over this version; files pruned by partition first, fetched if remote."""
        files = list(self.snapshot.files.values())
        schema = self.schema
        types = {f.name: f.type for f in schema}
        paths = [str(self.folder / f.path) for f in files]
        expressions = [_partition_expression(f.partition, types) for f in files]
        fragments = _fragments(paths, expressions, schema)
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
            fragments = _fragments([p for p, _ in kept], [e for _, e in kept], schema)
        return fragments.scanner(filter=filter, columns=columns)

    def to_arrow(self, filter: Any = None, columns: list[str] | None = None) -> pa.Table:  # noqa: A002
        return self.scanner(filter=filter, columns=columns).to_table()

    def to_pandas(self, filter: Any = None, columns: list[str] | None = None, **kwargs: Any) -> Any:  # noqa: A002
        return self.to_arrow(filter=filter, columns=columns).to_pandas(**kwargs)

    def read_files(self, files: list[AddFile], columns: list[str] | None = None) -> pa.Table:
        """The rows of some of this version's files (fetched if remote), partition columns included."""
        return self.files_scanner(files, columns).to_table()

    def files_scanner(
        self, files: list[AddFile], columns: list[str] | None = None, sequential: bool = False
    ) -> pads.Scanner:
        """A Scanner over some of this version's files (fetched if remote); ``sequential``: one
        file and a few batches read ahead at a time (pyarrow reads ahead 4 files and 16 batches),
        for a caller that streams them and wants memory bounded by a file."""
        types = {f.name: f.type for f in self.schema}
        for f in files:
            self._ensure_local(f, self.folder / f.path)
        paths = [str(self.folder / f.path) for f in files]
        expressions = [_partition_expression(f.partition, types) for f in files]
        ahead = {"fragment_readahead": 1, "batch_readahead": 2} if sequential else {}
        return _fragments(paths, expressions, self.schema).scanner(columns=columns, **ahead)

    def local_file(self, relative: str) -> Path:
        """The path on this machine of this version's file ``relative`` (as ``file_details``
        name it), fetched from the remote and verified first if it is only there."""
        entry = self.snapshot.files.get(relative)
        if entry is None:
            raise NotFoundError(f"dataset {self.name!r} v{self.version} has no file {relative!r}")
        path = self.folder / entry.path
        self._ensure_local(entry, path)
        return path

    def materialize(self) -> list[str]:
        """Fetch every file of this version that is only on the remote, so that any Delta reader
        opens ``folder`` here; returns the paths fetched."""
        fetched = []
        for f in self.snapshot.files.values():
            path = self.folder / f.path
            if not path.is_file():
                self._ensure_local(f, path)
                fetched.append(f.path)
        return fetched

    def _ensure_local(self, entry: AddFile, path: Path) -> None:
        if path.is_file():
            return
        syncer = self._store.context.syncer()
        if syncer is None:
            raise NotFoundError(f"dataset {self.name!r}: {entry.path} is missing locally")
        # The log's path stays under the folder (_delta_log.parse_commit); a symlink on the way,
        # made here, could still lead out: nothing fetched is written through one.
        if not path.resolve().is_relative_to(self.folder.resolve()):
            raise IntegrityError(
                f"dataset {self.name!r}: {path} leads outside {self.folder} (through a symlink): "
                "not fetching it there",
                digest=str(entry.digest),
            )
        expected = entry.digest
        with contextlib.closing(syncer.remote.open_file(f"datasets/{self.name}/{entry.path}")) as r:
            blob = write_blob(
                r,
                self._store.context.tmp,
                lambda d: path if expected is None or d == expected else path.with_suffix(".corrupt"),
            )
        if expected is not None and blob.digest != expected:
            blob.path.unlink(missing_ok=True)
            raise IntegrityError(
                f"dataset {self.name!r}: remote copy of {entry.path} is corrupt", digest=str(expected)
            )
        if expected is None and blob.size != entry.size:  # another writer's file: no digest to check
            blob.path.unlink(missing_ok=True)
            raise IntegrityError(f"dataset {self.name!r}: remote copy of {entry.path} has the wrong size")


def _fragments(paths: list[str], expressions: list[pads.Expression], schema: pa.Schema) -> pads.Dataset:
    return pads.FileSystemDataset.from_paths(
        paths,
        schema=schema,
        format=pads.ParquetFileFormat(),
        filesystem=pa.fs.LocalFileSystem(),
        partitions=expressions,
    )


def _partition_expression(partition: dict[str, str | None], types: dict[str, pa.DataType]) -> pads.Expression:
    expression = pads.scalar(True)
    for column, text in partition.items():
        scalar = _delta_schema.partition_scalar(text, types.get(column, pa.string()))
        expression = expression & (
            pads.field(column).is_null() if not scalar.is_valid else pads.field(column) == scalar
        )
    return expression
