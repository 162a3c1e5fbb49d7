"""A dataset version in a notebook: its version, size, meta, schema with statistics, and the
first rows of its first file when that file is here (a repr never downloads)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakelet.core._display import Card, human_size

if TYPE_CHECKING:
    from lakelet.datasets._dataset import Dataset

__all__ = ["dataset_card"]

_FIRST_ROWS = 5


def dataset_card(ds: Dataset) -> Card:
    s = ds.summary()
    card = Card(f"lakelet Dataset {ds.name!r} version {s['version']} of {len(ds.versions())}")
    card.row("rows", f"{s['rows']:,}").row("files", f"{s['files']} ({human_size(s['bytes'])})")
    card.row("last write", f"{s['last_write'][:19]} by {s['creator']}").row("folder", str(ds.folder))
    for key, value in sorted(ds.meta.items()):
        card.row(key, value)
    stats = ds.stats()
    card.table(
        "schema",
        ["column", "type", "nulls", "min", "max"],
        [
            [f.name, str(f.type), *(stats.get(f.name, {}).get(k, "") for k in ("nulls", "min", "max"))]
            for f in ds.schema
        ],
    )
    columns, rows = _first_rows(ds)
    first = next(iter(ds.snapshot.files), "")
    return card.table(f"first rows of {first}", columns, rows)


def _first_rows(ds: Dataset) -> tuple[list[str], list[list[Any]]]:
    import pyarrow.parquet as pq

    first = next(iter(ds.snapshot.files), None)
    if first is None:
        return [], []
    path = ds.folder / first
    if not path.is_file():
        return [], []  # only on the remote: to_arrow() fetches it
    batch = next(pq.ParquetFile(path).iter_batches(batch_size=_FIRST_ROWS), None)
    if batch is None:
        return [], []
    table = batch.to_pylist()
    columns = list(batch.schema.names)
    return columns, [[row[c] for c in columns] for row in table[:_FIRST_ROWS]]
