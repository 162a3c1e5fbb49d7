"""Datasets seen through ``lakelet://``: the latest version's files under ``datasets/<name>/``.

A dataset's folder holds the Parquet files of every version and the Delta log that says
which belong to which; a reader handed the folder's files would see every version's rows
at once. So ``lakelet://datasets/<name>/`` lists (and globs, and opens) only the files of
the latest version, as any Delta reader would see them. A lake name bound under
``datasets/`` is still a name, and wins over a dataset file at the same path.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lakelet.datasets._dataset import Dataset
from lakelet.facade._lake import Lake

__all__ = ["PREFIX", "Entry", "dataset_entries", "dataset_file", "local_path"]

PREFIX = "datasets/"
# (path, digest or None for a file another writer made, size, created_at ISO 8601)
Entry = tuple[str, str | None, int, str]


def _overlapping(lake: Lake, prefix: str) -> list[str]:
    """The datasets whose folder holds names under ``prefix`` (or is under it)."""
    if not (PREFIX.startswith(prefix) or prefix.startswith(PREFIX)):
        return []
    inside = prefix.removeprefix(PREFIX)
    return [n for n in lake.datasets() if f"{n}/".startswith(inside) or inside.startswith(f"{n}/")]


def _entry(name: str, detail: dict[str, Any]) -> Entry:
    created = datetime.fromtimestamp(detail["modified"] / 1000, UTC).isoformat()
    return f"{PREFIX}{name}/{detail['relative']}", detail["digest"], detail["size"], created


def dataset_entries(lake: Lake, prefix: str) -> list[Entry]:
    """Every file under ``prefix`` of the latest version of each dataset there."""
    entries = (
        _entry(name, d) for name in _overlapping(lake, prefix) for d in lake.dataset(name).file_details
    )
    return [e for e in entries if e[0].startswith(prefix)]


def dataset_file(lake: Lake, path: str) -> tuple[Dataset, Entry] | None:
    """The dataset whose latest version holds the file at ``path``, and that file; None if
    no dataset does."""
    for name in _overlapping(lake, path):
        relative = path.removeprefix(f"{PREFIX}{name}/")
        if relative == path:
            continue
        ds = lake.dataset(name)
        for detail in ds.file_details:
            if detail["relative"] == relative:
                return ds, _entry(name, detail)
    return None


def local_path(ds: Dataset, entry: Entry) -> Path:
    """Where ``entry`` of ``ds`` lies on this machine (fetched and verified first if remote)."""
    return ds.local_file(entry[0].removeprefix(f"{PREFIX}{ds.name}/"))
