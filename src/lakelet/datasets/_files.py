"""A dataset write's Parquet files: streamed through pyarrow's dataset writer into a staging
folder, hashed in place, renamed under their digest, with the column statistics of the write.

The statistics cost almost nothing beside the writer (``_stats``): counts come from the
batches' null counts, min and max from the Parquet metadata the writer hands back for each
file it closes, the numeric samples from a reservoir that touches a few thousand values.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from lakelet.core import _faults
from lakelet.core.errors import InvalidArgumentError
from lakelet.datasets import _stats
from lakelet.storage._objects import adopt_file, hash_file, start_writeback

__all__ = ["NULL_PARTITION", "Written", "partition_value", "staging_dir", "write_files"]

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


@dataclass
class Written:
    relative: str  # path under datasets/<name>/
    digest: str
    size: int
    rows: int
    partition: dict[str, str]
    stats: str = ""  # the Delta log's per-file statistics (JSON): numRecords, min, max, nulls


def partition_value(raw: str, type_: pa.DataType) -> pa.Scalar | None:
    """The value a Hive path segment stands for (pyarrow escapes it as a URI); None: null."""
    value = unquote(raw)
    return None if value == NULL_PARTITION else pa.scalar(value).cast(type_)


def _min_max_from_path(type_: pa.DataType) -> bool:
    """Types whose Hive path segment spells the value exactly (a float or a timestamp is
    printed, and might not parse back to the same value)."""
    return bool(pa.types.is_string(type_) or pa.types.is_integer(type_) or pa.types.is_date(type_))


def write_files(
    reader: pa.RecordBatchReader,
    staging: Path,
    folder: Path,
    partition_by: list[str],
    compression: str,
    dataset: str = "",
) -> tuple[list[Written], dict[str, Any], int]:
    """Write ``reader`` as Parquet under ``folder`` (content-named files, Hive folders), via
    ``staging`` on the same filesystem; returns the files, the column statistics and the rows.
    InvalidArgumentError, with nothing left behind, for a value no Delta reader can read.

    The files are not yet durable: the caller syncs before a manifest names them.
    """
    types = {f.name: f.type for f in reader.schema}
    by_path = {c for c in partition_by if _min_max_from_path(types[c])}
    scanned = set(partition_by) - by_path  # partition columns are not in the files' metadata
    columns = {
        name: _stats.ColumnStats(name, t, min_max_from_data=name in scanned) for name, t in types.items()
    }
    counted = [0]

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            _check_unsigned(batch, dataset)
            yield batch  # first: the writer encodes it while its statistics are gathered
            counted[0] += batch.num_rows
            for i, column in enumerate(batch.schema.names):
                columns[column].update(batch.column(i))

    files: list[tuple[str, pq.FileMetaData]] = []

    def visit(written: pads.WrittenFile) -> None:
        files.append((written.path, written.metadata))
        start_writeback(written.path)  # its last row groups: no need to wait for the flusher

    try:
        with _Flusher(staging):
            pads.write_dataset(
                pa.RecordBatchReader.from_batches(reader.schema, batches()),
                staging,
                format="parquet",
                partitioning=partition_by or None,
                partitioning_flavor="hive",
                file_options=pads.ParquetFileFormat().make_write_options(compression=compression),
                basename_template=f"part-{secrets.token_hex(4)}-{{i}}.parquet",
                existing_data_behavior="error",
                min_rows_per_group=1 << 17,
                max_rows_per_group=1 << 20,
                file_visitor=visit,
            )
        _faults.reached("dataset-files-staged")
        data_types = {n: t for n, t in types.items() if n not in partition_by}
        written = []
        for path, metadata in files:
            staged = Path(path)

            def read_back(row_group: int, column: str, staged: Path = staged) -> pa.ChunkedArray:
                return pq.ParquetFile(staged).read_row_group(row_group, columns=[column]).column(0)

            bounds: dict[str, tuple[Any, Any]] = {}
            for name, lo, hi in _stats.parquet_min_max(metadata, data_types, read_back):
                columns[name].observe(lo, hi)
                bounds[name] = _widen(bounds.get(name), lo, hi)
            w = _place(staging, folder, staged, metadata.num_rows)
            w.stats = _delta_stats(metadata, bounds, data_types)
            for name in by_path & w.partition.keys():
                value = partition_value(w.partition[name], types[name])
                if value is not None:
                    columns[name].observe(value.as_py(), value.as_py())
            written.append(w)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written, {c: s.to_json() for c, s in columns.items()}, counted[0]


def _check_unsigned(batch: pa.RecordBatch, dataset: str) -> None:
    """A ``uint64`` column is a Delta ``long``: delta-rs refuses to read a file holding a value
    past 2**63 - 1 under it, and Polars or Spark would read it wrapped, so such a value is
    refused before the commit rather than written for lakelet's reader only."""
    for field, column in zip(batch.schema, batch.columns, strict=True):
        for array in _uint64_arrays(column):
            high = pc.max(array).as_py()
            if high is not None and high >= 2**63:
                raise InvalidArgumentError(
                    f"dataset {dataset!r}: column {field.name!r} holds {high}, past the largest "
                    "value of a Delta long (2**63 - 1), which Delta readers cannot read in a "
                    "uint64 column; nothing was written (cast it to int64, decimal or string)"
                )


def _uint64_arrays(array: pa.Array) -> Iterator[pa.Array]:
    """The uint64 values of ``array``, nested ones included."""
    type_ = array.type
    if pa.types.is_uint64(type_):
        yield array
    elif pa.types.is_struct(type_):
        for i in range(type_.num_fields):
            yield from _uint64_arrays(array.field(i))
    elif pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        yield from _uint64_arrays(array.flatten())
    elif pa.types.is_map(type_):
        yield from _uint64_arrays(array.keys)
        yield from _uint64_arrays(array.items)
    elif pa.types.is_dictionary(type_):
        yield from _uint64_arrays(array.dictionary)


def _widen(bounds: tuple[Any, Any] | None, lo: Any, hi: Any) -> tuple[Any, Any]:
    if bounds is None:
        return lo, hi
    old_lo, old_hi = bounds
    if lo is not None and lo == lo and (old_lo is None or lo < old_lo):
        old_lo = lo
    if hi is not None and hi == hi and (old_hi is None or hi > old_hi):
        old_hi = hi
    return old_lo, old_hi


def _stat_value(value: Any, type_: pa.DataType) -> Any:
    """A min or max as the Delta log's statistics hold it, or None where lakelet leaves it out:
    a reader skips files on these bounds, so only values that compare exactly as the reader's
    are written (no timestamps, whose units and zones differ; no integers past int64; no
    non-finite float; no string long enough that another writer would truncate it)."""
    if value is None:
        return None
    if pa.types.is_integer(type_):
        return value if -(2**63) <= value < 2**63 else None
    if pa.types.is_floating(type_):
        return value + 0.0 if math.isfinite(value) else None
    if pa.types.is_string(type_):
        return value if len(value) <= 32 else None
    if pa.types.is_date(type_):
        return value.isoformat()
    return None


def _delta_stats(
    metadata: pq.FileMetaData, bounds: dict[str, tuple[Any, Any]], types: dict[str, pa.DataType]
) -> str:
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    for name, (lo, hi) in bounds.items():
        lo, hi = _stat_value(lo, types[name]), _stat_value(hi, types[name])
        if lo is not None and hi is not None:
            lows[name], highs[name] = lo, hi
    index = {metadata.schema.column(j).path: j for j in range(metadata.num_columns)}
    nulls: dict[str, int] = {}
    for name in types:
        j = index.get(name)
        groups = (
            [metadata.row_group(r).column(j).statistics for r in range(metadata.num_row_groups)]
            if j is not None
            else []
        )
        if j is not None and all(g is not None and g.has_null_count for g in groups):
            nulls[name] = sum(g.null_count for g in groups)
    body = {"numRecords": metadata.num_rows, "minValues": lows, "maxValues": highs, "nullCount": nulls}
    return json.dumps(body, separators=(",", ":"), allow_nan=False)


class _Flusher:
    """While pyarrow writes under ``folder``, start the writeback of what it has written every
    half second. The kernel would otherwise keep those pages dirty until the sync before the
    manifest (it starts on its own only past ~10 % of RAM or 30 s), which then waits for the
    whole write: ~1.5 s for the bench's 300 MB, a quarter of pyarrow's time. The writer does
    not hand out its file handles, hence the polling. ``start_writeback`` does not wait for
    the disk (it can stall while the device queue is full: on this thread, not the writer's)."""

    INTERVAL = 0.5

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lakelet-flusher", daemon=True)

    def __enter__(self) -> _Flusher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            for folder, _, names in os.walk(self._folder):
                for name in names:
                    with contextlib.suppress(OSError):  # renamed or gone meanwhile: nothing to do
                        start_writeback(os.path.join(folder, name))


def _place(staging: Path, folder: Path, path: Path, rows: int) -> Written:
    relative_dir = path.parent.relative_to(staging).as_posix()
    partition = dict(part.split("=", 1) for part in relative_dir.split("/") if "=" in part)
    target = folder / relative_dir if relative_dir != "." else folder
    digest, size = hash_file(path)  # in place, then a rename: the staging dir is on the same disk
    blob = adopt_file(
        path, digest, size, lambda d: target / f"part-{d.hexdigest[:32]}.parquet", durable=False
    )
    return Written(blob.path.relative_to(folder).as_posix(), str(blob.digest), blob.size, rows, partition)


def staging_dir(lake_root: Path) -> Path:
    """A folder of its own in ``tmp/``, named after this process: ``fsck`` removes it if the
    process died before ``write_files`` did."""
    return lake_root / "tmp" / f"{os.getpid()}-dataset-{secrets.token_hex(6)}"
