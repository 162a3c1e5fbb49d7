"""What the page shows, as plain JSON-able values, read from the lake: no name, dataset or remote
object is ever created, changed or removed here.

Names come from the local catalog only (a name bound elsewhere shows after
`lakelet sync`). Lineage records that are only on the remote are fetched into
the local cache, verified, as `lakelet lineage` does: they are small and the
graph needs them. Dataset files are never fetched for a preview.

Lineage records may come from a peer (through the shared remote), so the links
the page draws from them (a run's code link: ``source.git.url``, a graph node's
``code_url``) leave here only as http(s) URLs, else as None: a ``javascript:``
link would run in the page's origin.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import lakelet
from lakelet import CorruptRecordError, File, Lake, NotFoundError

__all__ = [
    "MAX_NAMES",
    "dataset",
    "datasets",
    "file_info",
    "lineage",
    "names",
    "overview",
    "rows",
    "run",
    "runs",
    "web_link",
]

MAX_NAMES = 5000

# No blank and no control character anywhere: browsers drop some of them before they read the
# scheme (" javascript:", "java\tscript:"), so only a URL that is plainly http(s) is one here.
_WEB_LINK = re.compile(r"https?://[^\s\x00-\x1f\x7f-\x9f]+", re.IGNORECASE)


def web_link(value: object) -> str | None:
    """``value`` if it is an http(s) URL with a host, else None."""
    if not isinstance(value, str) or not _WEB_LINK.fullmatch(value):
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed [IPv6 host
        return None
    return value if parts.scheme in ("http", "https") and host else None


def _linked(record: dict[str, Any]) -> dict[str, Any]:
    """A lineage record as the page gets it: its code link kept only if it is a web link."""
    source = record.get("source")
    git = source.get("git") if isinstance(source, dict) else None
    if not isinstance(source, dict) or not isinstance(git, dict) or "url" not in git:
        return record
    return {**record, "source": {**source, "git": {**git, "url": web_link(git["url"])}}}


def _file_row(f: File) -> dict[str, Any]:
    r = f.record
    return {
        "name": r.name,
        "size": r.size,
        "digest": r.digest,
        "created_at": r.created_at,
        "creator": r.creator,
        "state": f.state,
        "kind": f.kind,
    }


def overview(lake: Lake) -> dict[str, Any]:
    files = lake.ls("")
    prefixes: dict[str, dict[str, Any]] = {}
    for f in files:
        top = f.name.split("/", 1)[0] + "/" if "/" in f.name else ""
        group = prefixes.setdefault(top, {"prefix": top, "names": 0, "bytes": 0, "last_write": ""})
        group["names"] += 1
        group["bytes"] += f.size
        group["last_write"] = max(group["last_write"], f.record.created_at)
    status = lake.status()
    synced = status["last_sync"]  # a datetime; None if never synced
    last_sync = synced.isoformat() if isinstance(synced, datetime) else None
    return {
        "root": str(lake.root),
        "remote": lake.remote,
        "user": lakelet.current_user(),
        "names": len(files),
        "bytes": sum(f.size for f in files),
        "prefixes": sorted(prefixes.values(), key=lambda g: g["prefix"]),
        "datasets": len(lake.datasets()),
        "runs": len(lake.runs()),
        "unpushed": status["unpushed"],
        "last_sync": last_sync,
    }


def names(lake: Lake, prefix: str = "", query: str = "", limit: int = 500) -> dict[str, Any]:
    """Names under ``prefix`` whose name contains ``query`` (case-insensitive)."""
    files = lake.ls(prefix)
    if query:
        files = [f for f in files if query.lower() in f.name.lower()]
    return {"total": len(files), "names": [_file_row(f) for f in files[:limit]]}


def _known(lake: Lake, name: str) -> File:
    """A lake name from the local catalog; unlike lake.file(), never asks the remote."""
    return lake.file(name, ask_remote=False)


def file_info(lake: Lake, name: str) -> dict[str, Any]:
    f = _known(lake, name)
    record = f.lineage()
    return {
        **_file_row(f),
        "meta": f.meta,
        "path": str(f.path) if f.is_local else None,
        "lineage": _linked(record),
        "inputs": lake.lineage_inputs(record),
        "downstream": [o.name for o in f.downstream()],
    }


def lineage(lake: Lake, name: str | None, depth: int, direction: str) -> dict[str, Any]:
    graph = (
        lake.lineage_graph()
        if name is None
        else lake.lineage_graph(_known(lake, name).name, depth, direction)
    )
    shown = graph.to_json()
    # a stage run's node carries its record's source.git.url as code_url
    shown["nodes"] = [
        {**n, "code_url": web_link(n["code_url"])} if "code_url" in n else n for n in shown["nodes"]
    ]
    return shown


def datasets(lake: Lake) -> list[dict[str, Any]]:
    """Every dataset whose latest manifest is valid (opening another one says what is wrong)."""
    rows = []
    for name in lake.datasets():
        try:
            rows.append(lake.dataset(name).summary())
        except CorruptRecordError:
            continue
    return rows


def dataset(lake: Lake, name: str, version: int | None) -> dict[str, Any]:
    ds = lake.dataset(name, version)
    partitions: dict[str, set[str]] = {}
    for entry in ds.file_details:
        for column, value in entry["partition"].items():
            partitions.setdefault(column, set()).add(
                value if value is not None else "__HIVE_DEFAULT_PARTITION__"
            )
    return {
        **ds.summary(),
        "versions": ds.versions(),
        "mode": ds.commit_info.get("mode"),
        "schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in ds.schema],
        "partitions": {c: sorted(v) for c, v in partitions.items()},
        "file_list": ds.file_details,
        "stats": ds.stats(),
    }


def rows(lake: Lake, name: str, version: int | None, limit: int) -> dict[str, Any]:
    """The first rows of a version, when its files are on this machine (a preview never fetches)."""
    ds = lake.dataset(name, version)
    if not all((ds.folder / f["relative"]).is_file() for f in ds.file_details):
        return {
            "columns": [],
            "rows": [],
            "note": f"the files are only on the remote: `lakelet pull datasets/{name}/` to preview them",
        }
    table = ds.scanner().head(limit)
    return {"columns": table.column_names, "rows": [list(r.values()) for r in table.to_pylist()]}


def runs(lake: Lake) -> list[dict[str, Any]]:
    return list(reversed(lake.runs()))  # newest first


def run(lake: Lake, run_id: str) -> dict[str, Any]:
    for r in lake.runs():
        if r.get("run_id") == run_id:
            return r
    raise NotFoundError(f"no pipeline run {run_id!r} in the lake at {lake.root}")
