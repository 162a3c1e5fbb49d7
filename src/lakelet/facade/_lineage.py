"""Reading lineage: what a file was made from (upstream) and what was made from it (downstream).

Stage runs write their lineage records (``stages._stage``); this walks them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakelet.lake._run_lookup import current_run, run_records

if TYPE_CHECKING:
    from lakelet.facade._file import File
    from lakelet.facade._lake import Lake

__all__ = ["downstream", "input_labels", "lake_inputs", "upstream"]


def downstream(lake: Lake, name: str, depth: int | None = None) -> list[File]:
    """Files derived from ``name``, breadth first, up to ``depth`` stage runs away."""
    consumers: dict[str, list[str]] = {}  # input name -> output names of runs that read it
    for run in run_records(lake.context):  # a refused record is reported and left out
        outputs = [o.name for o in run.outputs]
        for input_name in lake_inputs(lake, run.lineage):
            consumers.setdefault(input_name, []).extend(outputs)
    seen: dict[str, None] = {}
    frontier, level = [name], 0
    while frontier and (depth is None or level < depth):
        level += 1
        frontier = [o for n in frontier for o in consumers.get(n, []) if o not in seen and o != name]
        seen.update(dict.fromkeys(frontier))
    return [lake.file(n) for n in seen]


def upstream(lake: Lake, name: str, depth: int | None = None) -> list[dict[str, Any]]:
    """The lineage records of ``name`` and of its inputs, recursively, up to ``depth`` levels."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    frontier, level = [name], 0
    while frontier and (depth is None or level < depth):
        level += 1
        next_frontier = []
        for n in frontier:
            if n in seen:
                continue
            seen.add(n)
            record = lake.file(n).lineage()
            if any(r is not record and r.get("key") and r.get("key") == record.get("key") for r in records):
                continue  # a second output of a run already listed
            records.append(record)
            next_frontier += lake_inputs(lake, record)
        frontier = next_frontier
    return records


def lake_inputs(lake: Lake, record: dict[str, Any]) -> list[str]:
    """The lake names a lineage record's run read (upstream stages: their outputs)."""
    names = []
    for identity in record.get("inputs", {}).values():
        if "name" in identity:
            names.append(identity["name"])
        elif "stage" in identity:
            names += _outputs_of_key(lake, identity["stage"], identity["key"])
    return names


def input_labels(lake: Lake, record: dict[str, Any]) -> list[str]:
    """Every input of a lineage record: lake names, local paths, the source of an add."""
    labels = lake_inputs(lake, record)
    labels += [i["path"] for i in record.get("inputs", {}).values() if "path" in i]
    if record.get("kind") == "add" and record.get("source"):
        labels.append(str(record["source"]))
    return labels


def _outputs_of_key(lake: Lake, stage: str, key: str) -> list[str]:
    _, run = current_run(lake.context, stage, key)
    return [] if run is None else [o.name for o in run.outputs]
