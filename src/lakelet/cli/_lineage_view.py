"""``lakelet lineage``: inputs → creation method → outputs, as boxes, JSON, Graphviz or Mermaid."""

from __future__ import annotations

import json
from typing import Any

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from lakelet import Lake, LineageGraph

__all__ = ["as_dot", "as_mermaid", "as_text"]


def _outputs(record: dict[str, Any]) -> list[str]:
    return [o["name"] for o in record.get("outputs", [])]


def as_text(lake: Lake, records: list[dict[str, Any]]) -> Group:
    blocks: list[RenderableType] = []
    for record in records:
        inputs = lake.lineage_inputs(record) or ["(none)"]
        boxes = Columns(
            [
                Panel("\n".join(inputs), title="inputs", expand=False),
                Text("→", justify="center"),
                Panel(LineageGraph.method(record), title="creation method", expand=False),
                Text("→", justify="center"),
                Panel("\n".join(_outputs(record)), title="outputs", expand=False),
            ],
            align="center",
        )
        details = []
        git = (record.get("source") or {}).get("git") if record.get("kind") == "stage" else None
        if record.get("kind") == "stage":
            source = record.get("source") or {}
            where = (git or {}).get("url") or f"{source.get('file')}:{source.get('line')}"
            dirty = " (uncommitted changes)" if git and git.get("dirty") else ""
            details.append(f"code: {where}{dirty}")
            env = record.get("environment", {})
            details.append(
                f"by {env.get('user')} on {env.get('host')}, {record.get('started_at', '')[:19]}, "
                f"{record.get('duration_s', 0):.3f} s"
            )
            packages = record.get("packages", {})
            versions = {"python": env.get("python"), "lakelet": env.get("lakelet"), **packages}
            details.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
        else:
            env = record.get("environment", {})
            details.append(
                f"added by {record.get('user')} on {env.get('host', '?')}, "
                f"{record.get('created_at', '')[:19]}"
            )
        blocks += [boxes, Text("\n".join(details), style="dim"), Text("")]
    return Group(*blocks)


def _short_ids(lake: Lake, records: list[dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The lineage graph with identifiers Graphviz and Mermaid accept (n0, n1, …)."""
    graph = LineageGraph.of(lake, records)
    ids = {ident: f"n{i}" for i, ident in enumerate(graph.nodes)}
    nodes = {ids[ident]: node for ident, node in graph.nodes.items()}
    return nodes, [(ids[a], ids[b]) for a, b in graph.edges]


def _is_run(node: dict[str, Any]) -> bool:
    return node["kind"] in ("stage", "add")


def as_dot(lake: Lake, records: list[dict[str, Any]]) -> str:
    nodes, edges = _short_ids(lake, records)
    lines = ["digraph lineage {", "  rankdir=LR;"]
    for ident, node in nodes.items():
        shape = "box" if _is_run(node) else "note"
        lines.append(f"  {ident} [label={json.dumps(node['label'])}, shape={shape}];")
    lines += [f"  {a} -> {b};" for a, b in edges]
    return "\n".join([*lines, "}"])


def as_mermaid(lake: Lake, records: list[dict[str, Any]]) -> str:
    nodes, edges = _short_ids(lake, records)
    lines = ["flowchart LR"]
    for ident, node in nodes.items():
        text = node["label"].replace('"', "'")
        lines.append(f'  {ident}["{text}"]' if _is_run(node) else f'  {ident}[/"{text}"/]')
    lines += [f"  {a} --> {b}" for a, b in edges]
    return "\n".join(lines)
