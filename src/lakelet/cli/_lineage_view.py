"""``lakelet lineage``: inputs → creation method → outputs, as boxes, JSON, Graphviz or Mermaid."""

from __future__ import annotations

import json
from typing import Any

from rich.columns import Columns
from rich.console import Group
from rich.panel import Panel
from rich.text import Text

from lakelet import Lake
from lakelet._lineage import input_labels


def _method(record: dict[str, Any]) -> str:
    if record.get("kind") == "stage":
        return f"{record['stage']}  [{record['key'][:12]}]"
    return "lakelet add"


def _outputs(record: dict[str, Any]) -> list[str]:
    return [o["name"] for o in record.get("outputs", [])]


def as_text(lake: Lake, records: list[dict[str, Any]]) -> Group:
    blocks = []
    for record in records:
        inputs = input_labels(lake, record) or ["(none)"]
        boxes = Columns([
            Panel("\n".join(inputs), title="inputs", expand=False),
            Text("→", justify="center"),
            Panel(_method(record), title="creation method", expand=False),
            Text("→", justify="center"),
            Panel("\n".join(_outputs(record)), title="outputs", expand=False),
        ], align="center")
        details = []
        git = (record.get("source") or {}).get("git") if record.get("kind") == "stage" else None
        if record.get("kind") == "stage":
            source = record.get("source") or {}
            where = (git or {}).get("url") or f"{source.get('file')}:{source.get('line')}"
            dirty = " (uncommitted changes)" if git and git.get("dirty") else ""
            details.append(f"code: {where}{dirty}")
            env = record.get("environment", {})
            details.append(f"by {env.get('user')} on {env.get('host')}, {record.get('started_at', '')[:19]}, "
                           f"{record.get('duration_s', 0):.3f} s")
            packages = record.get("packages", {})
            versions = {"python": env.get("python"), "lakelet": env.get("lakelet"), **packages}
            details.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
        else:
            env = record.get("environment", {})
            details.append(f"added by {record.get('user')} on {env.get('host', '?')}, "
                           f"{record.get('created_at', '')[:19]}")
        blocks += [boxes, Text("\n".join(details), style="dim"), Text("")]
    return Group(*blocks)


def _graph(lake: Lake, records: list[dict[str, Any]]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    nodes: dict[str, str] = {}  # id -> label
    edges: list[tuple[str, str]] = []

    def node(label: str, prefix: str) -> str:
        if prefix == "f":  # a file is one node however many runs touch it; each run is its own
            for k, v in nodes.items():
                if v == label and k.startswith(prefix):
                    return k
        ident = f"{prefix}{len(nodes)}"
        nodes[ident] = label
        return ident

    for record in records:
        run = node(_method(record), "r")
        edges += [(node(i, "f"), run) for i in input_labels(lake, record)]
        edges += [(run, node(o, "f")) for o in _outputs(record)]
    return nodes, edges


def as_dot(lake: Lake, records: list[dict[str, Any]]) -> str:
    nodes, edges = _graph(lake, records)
    lines = ["digraph lineage {", "  rankdir=LR;"]
    for ident, label in nodes.items():
        shape = "box" if ident.startswith("r") else "note"
        lines.append(f"  {ident} [label={json.dumps(label)}, shape={shape}];")
    lines += [f"  {a} -> {b};" for a, b in edges]
    return "\n".join([*lines, "}"])


def as_mermaid(lake: Lake, records: list[dict[str, Any]]) -> str:
    nodes, edges = _graph(lake, records)
    lines = ["flowchart LR"]
    for ident, label in nodes.items():
        text = label.replace('"', "'")
        lines.append(f'  {ident}["{text}"]' if ident.startswith("r") else f'  {ident}[/"{text}"/]')
    lines += [f"  {a} --> {b}" for a, b in edges]
    return "\n".join(lines)
