"""A dataset write's Parquet files: streamed through pyarrow's dataset writer into a staging
folder, hashed in place, renamed under their digest, with the column statistics of the write
(gathered as the batches stream past, ``_stats``).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as pads

from . import _stats
from ._objects import adopt_file, hash_stream

NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


@dataclass
class Written:
    relative: str  # path under datasets/<name>/
    digest: str
    size: int
    rows: int
    partition: dict[str, str]


def partition_value(raw: str, type_: pa.DataType) -> pa.Scalar | None:
    """The value a Hive path segment stands for (pyarrow escapes it as a URI); None: null."""
    value = unquote(raw)
    return None if value == NULL_PARTITION else pa.scalar(value).cast(type_)


def write_files(reader: pa.RecordBatchReader, staging: Path, folder: Path, partition_by: list[str],
                compression: str) -> tuple[list[Written], dict[str, Any], int]:
    """Write ``reader`` as Parquet under ``folder`` (content-named files, Hive folders), via
    ``staging`` on the same filesystem; returns the files, the column statistics and the rows.

    The files are not yet durable: the caller syncs before a manifest names them.
    """
    columns = {f.name: _stats.ColumnStats(f.name, f.type) for f in reader.schema}
    counted = [0]

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            counted[0] += batch.num_rows
            for i, column in enumerate(batch.schema.names):
                columns[column].update(batch.column(i))
            yield batch

    files: list[tuple[str, int]] = []
    try:
        pads.write_dataset(
            pa.RecordBatchReader.from_batches(reader.schema, batches()), staging,
            format="parquet", partitioning=partition_by or None, partitioning_flavor="hive",
            file_options=pads.ParquetFileFormat().make_write_options(compression=compression),
            basename_template=f"part-{secrets.token_hex(4)}-{{i}}.parquet",
            existing_data_behavior="error", min_rows_per_group=1 << 17, max_rows_per_group=1 << 20,
            file_visitor=lambda wf: files.append((wf.path, wf.metadata.num_rows)),
        )
        written = [_place(staging, folder, Path(path), rows) for path, rows in files]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written, {c: s.to_json() for c, s in columns.items()}, counted[0]


def _place(staging: Path, folder: Path, path: Path, rows: int) -> Written:
    relative_dir = path.parent.relative_to(staging).as_posix()
    partition = dict(part.split("=", 1) for part in relative_dir.split("/") if "=" in part)
    target = folder / relative_dir if relative_dir != "." else folder
    with open(path, "rb") as f:  # hash in place, then rename: the staging dir is on the same disk
        digest, size = hash_stream(f)
    blob = adopt_file(path, digest, size, lambda d: target / f"part-{d.hexdigest[:32]}.parquet",
                      durable=False)
    return Written(blob.path.relative_to(folder).as_posix(), str(blob.digest), blob.size, rows, partition)


def staging_dir(lake_root: Path) -> Path:
    return lake_root / "tmp" / f"{os.getpid()}-dataset-{secrets.token_hex(6)}"
