"""A lake and a file in a notebook (``_repr_html_`` and IPython's text form): what a
glance should tell, read from this machine's index only — a repr never reaches the remote
and never fetches content."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lakelet.core._display import Card, human_size
from lakelet.core._meta import RESERVED_KEYS
from lakelet.core.errors import LakeletError
from lakelet.storage._scopes import LAKE

if TYPE_CHECKING:
    from lakelet.facade._file import File
    from lakelet.facade._lake import Lake

__all__ = ["file_card", "lake_card"]

_RECENT = 5


def lake_card(lake: Lake) -> Card:
    context = lake.context
    count, size = context.catalog.totals(LAKE)
    card = Card(f"lakelet Lake at {lake.root}")
    card.row("remote", lake.remote or "none (embedded)")
    card.row("names", f"{count:,} ({human_size(size)})")
    if lake.remote is not None:
        status = lake.status()
        card.row("unpushed", f"{status['unpushed']:,}")
        last = status["last_sync"]
        card.row("last sync", f"{last:%Y-%m-%d %H:%M} UTC" if last is not None else "never")
    datasets = lake.datasets()
    card.row("datasets", f"{len(datasets):,}" + (f": {', '.join(datasets[:_RECENT])}" if datasets else ""))
    recent = context.catalog.recent(LAKE, _RECENT)
    return card.table(
        "added last",
        ["name", "size", "created", "creator"],
        [[r.name, human_size(r.size), r.created_at[:19].replace("T", " "), r.creator] for r in recent],
    )


def file_card(f: File) -> Card:
    try:
        name = f.name  # a digest's handle looks its name up
        card = Card(f"lakelet File {name!r}" + ("" if f.scope == LAKE else f" ({f.scope})"))
        record = f.lake.context.lookup(f.scope, name, ask_remote=False)
    except LakeletError as e:  # no lake here, no name holds the digest: said, not raised
        return Card(f"lakelet File {f!r}").row("error", str(e))
    if record is None or record.removed_at is not None:
        return card.row("state", "not bound in this lake (as far as this machine knows)")
    card.row("size", f"{human_size(record.size)} ({record.size:,} bytes)").row("digest", record.digest)
    card.row("created", f"{record.created_at[:19].replace('T', ' ')} by {record.creator}")
    card.row("state", f.lake.context.state_of(record))
    meta = record.meta
    if "stage" in meta:
        card.row("made by", f"stage {meta['stage']} (run record {meta.get('run', '?')})")
    elif "source" in meta:
        card.row("made by", f"lakelet add from {meta['source']}")
    for key in sorted(meta.keys() - RESERVED_KEYS):  # the user's own
        card.row(key, meta[key])
    return card
