"""``lakelet datasets`` and ``lakelet info datasets/<name>``: versions, sizes, column statistics."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from lakelet import CorruptRecordError, Lake

from ._render import human_size, new_table, stderr, stdout

if TYPE_CHECKING:  # imported where a table is drawn
    from rich.text import Text

__all__ = ["dataset_info", "list_datasets"]


def _readable(lake: Lake) -> list[dict[str, Any]]:
    """The summary of each dataset's latest version; one whose manifest is invalid (damaged, or
    a peer's) is left out and said so in one line."""
    rows = []
    for name in lake.datasets():
        try:
            rows.append(lake.dataset(name).summary())
        except CorruptRecordError as e:
            stderr.print(f"warning: skipped {e}", markup=False, highlight=False)
    return rows


def list_datasets(lake: Lake, as_json: bool) -> None:
    rows = _readable(lake)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = new_table(box=None, pad_edge=False)
    for column in ("dataset", "version", "rows", "files", "size", "last write"):
        table.add_column(column, justify="left" if column in ("dataset", "last write") else "right")
    for r in rows:
        table.add_row(
            *_plain(
                r["name"],
                str(r["version"]),
                f"{r['rows']:,}",
                str(r["files"]),
                human_size(r["bytes"]),
                r["last_write"][:19].replace("T", " "),
            )
        )
    stdout.print(table, highlight=False)


def _plain(*cells: str) -> list[Text]:
    """Cells shown as they are: a name, a creator or a value in the data is never rich markup
    (a manifest may come from a peer, and "[/b]" would stop the table)."""
    from rich.text import Text

    return [Text(c) for c in cells]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def dataset_info(lake: Lake, name: str, as_json: bool) -> None:
    ds = lake.dataset(name)
    stats = ds.stats()
    s = ds.summary()
    if as_json:
        shown = {**s, "schema": str(ds.schema), "stats": stats, "meta": ds.meta}
        click.echo(json.dumps(shown, indent=2, default=str))
        return
    meta = "".join(f"\n{k}: {json.dumps(v)}" for k, v in sorted(ds.meta.items()))
    stdout.print(
        f"dataset {name}: version {s['version']} of {len(ds.versions())}, {s['rows']:,} rows in "
        f"{s['files']} files ({human_size(s['bytes'])}), last write {s['last_write'][:19]} "
        f"by {s['creator']}\nfolder: {ds.folder}{meta}",
        markup=False,
        highlight=False,
    )
    table = new_table(pad_edge=False)
    for column in ("column", "type", "count", "nulls", "min", "max", "p50", "p95"):
        table.add_column(column, justify="left" if column in ("column", "type") else "right")
    for column, st in stats.items():
        q = st.get("quantiles", {})
        table.add_row(
            *_plain(
                column,
                st["type"],
                f"{st['count']:,}",
                f"{st['nulls']:,}",
                _fmt(st["min"]),
                _fmt(st["max"]),
                _fmt(q.get("0.5")),
                _fmt(q.get("0.95")),
            )
        )
    stdout.print(table, highlight=False)
