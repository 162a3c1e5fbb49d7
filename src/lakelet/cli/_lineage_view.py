"""``lakelet lineage``: inputs → creation method → outputs, as boxes, JSON, Graphviz or Mermaid."""

from __future__ import annotations

import json
import re
from typing import Any

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from lakelet import Lake, LineageGraph

__all__ = ["as_dot", "as_mermaid", "as_text"]


def _outputs(record: dict[str, Any]) -> list[str]:
    return [o["name"] for o in record.get("outputs", [])]


# a stage's 40-hex key (in its output names) or a 64-hex digest: the first 12 tell them apart
_KEY = re.compile(r"(?<![0-9a-f])([0-9a-f]{12})[0-9a-f]{28,52}(?![0-9a-f])")
_BOX = 4  # a panel's borders and padding
_BETWEEN = 3 + 2 * 2  # an arrow and the gaps beside it


def _boxes(inputs: list[str], method: str, outputs: list[str], width: int) -> RenderableType:
    """Three boxes side by side when they fit ``width``; else with keys cut to 12 hex digits
    (``--format json`` has them whole), stacked one under the other if still too wide."""
    columns = [inputs, [method], outputs]
    if _side_by_side_width(columns) > width:
        columns = [[_KEY.sub(r"\1…", line) for line in lines] for lines in columns]
    titles = ["inputs", "creation method", "outputs"]
    panels = [
        Panel(Text("\n".join(lines)), title=title, expand=False)
        for lines, title in zip(columns, titles, strict=True)
    ]
    if _side_by_side_width(columns) <= width:
        arrow = Text("→", justify="center")
        return Columns([panels[0], arrow, panels[1], arrow, panels[2]], align="center")
    arrow = Text("  ↓")
    return Group(panels[0], arrow, panels[1], arrow, panels[2])


def _side_by_side_width(columns: list[list[str]]) -> int:
    return sum(max(map(len, lines), default=0) + _BOX for lines in columns) + 2 * _BETWEEN


def as_text(lake: Lake, records: list[dict[str, Any]], width: int) -> Group:
    """The boxes of each record and its details, laid out for a terminal ``width`` wide."""
    blocks: list[RenderableType] = []
    for record in records:
        inputs = lake.lineage_inputs(record) or ["(none)"]
        boxes = _boxes(inputs, LineageGraph.method(record), _outputs(record), width)
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
