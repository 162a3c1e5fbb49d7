"""Lineage records as one graph: files and datasets joined by the runs (stage runs, adds) that made them.

The CLI draws it as Graphviz or Mermaid, `lakelet ui` as an interactive graph;
both start from the same lineage records `lakelet lineage` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lakelet.facade._lineage import downstream, input_labels, upstream
from lakelet.lake._run_lookup import run_records

if TYPE_CHECKING:
    from lakelet.facade._lake import Lake


__all__ = ["LineageGraph", "around", "build", "method", "whole"]


@dataclass
class LineageGraph:
    """Nodes (runs, files, sources, datasets) and the edges from what a run read to what it made."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {"id", "kind", "label", ...}
    edges: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, lake: Lake, records: list[dict[str, Any]]) -> LineageGraph:
        """The graph of these lineage records (``Lake.lineage`` returns them)."""
        return build(lake, records)

    @staticmethod
    def method(record: dict[str, Any]) -> str:
        """How a record's outputs were made: the stage and its key, or an add."""
        return method(record)

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": list(self.nodes.values()),
            "edges": [{"source": a, "target": b} for a, b in self.edges],
        }


def method(record: dict[str, Any]) -> str:
    """How a record's outputs were made: the stage and its key, or an add."""
    if record.get("kind") == "stage":
        return f"{record['stage']}  [{record['key'][:12]}]"
    return "lakelet add"


def build(lake: Lake, records: list[dict[str, Any]]) -> LineageGraph:
    """Run nodes for the records, file nodes for what they read and wrote, dataset nodes for writes."""
    graph = LineageGraph()

    def node(ident: str, kind: str, label: str, **extra: Any) -> str:
        graph.nodes.setdefault(ident, {"id": ident, "kind": kind, "label": label, **extra})
        return ident

    def edge(a: str, b: str) -> None:
        if (a, b) not in graph.edges:
            graph.edges.append((a, b))

    for record in records:
        outputs = [o["name"] for o in record.get("outputs", [])]
        if record.get("kind") == "stage":
            git = (record.get("source") or {}).get("git") or {}
            run = node(
                f"run:{record['key']}",
                "stage",
                method(record),
                stage=record["stage"],
                key=record["key"],
                duration_s=record.get("duration_s"),
                started_at=record.get("started_at"),
                code_url=git.get("url"),
            )
        else:
            run = node(
                f"add:{outputs[0] if outputs else ''}", "add", method(record), source=record.get("source")
            )
        for label in input_labels(lake, record):
            is_name = not (label.startswith("/") or "://" in label)
            edge(node(f"file:{label}", "file" if is_name else "source", label), run)
        for name in outputs:
            edge(run, node(f"file:{name}", "file", name))
        for written in record.get("datasets_written") or []:
            dataset = written["dataset"]
            edge(run, node(f"dataset:{dataset}", "dataset", dataset, version=written.get("version")))
    return graph


def around(lake: Lake, name: str, depth: int | None, direction: str = "both") -> LineageGraph:
    """The graph of ``name``: its upstream records, the records of what was derived from it, or both."""
    records: list[dict[str, Any]] = []
    if direction in ("upstream", "both"):
        records += upstream(lake, name, depth)
    if direction in ("downstream", "both"):
        seen = {r.get("key") for r in records if r.get("key")}
        for f in downstream(lake, name, depth):
            record = f.lineage()
            if record.get("key") not in seen or record.get("kind") != "stage":
                seen.add(record.get("key"))
                records.append(record)
    graph = build(lake, records)
    target = f"file:{name}"
    if target not in graph.nodes:  # a file with no recorded run around it still shows
        graph.nodes[target] = {"id": target, "kind": "file", "label": name}
    graph.nodes[target]["focus"] = True
    return graph


def whole(lake: Lake) -> LineageGraph:
    """Every stage run the lake knows, with the files they read and wrote."""
    return build(lake, [r.lineage for r in run_records(lake.context)])  # refused ones: reported, left out
