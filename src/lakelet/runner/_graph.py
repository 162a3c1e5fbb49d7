"""The stage graph of a run as plain data: every stage the targets need and the stages each one reads.

It is built from the decorator bindings (``@lakelet.stage(rows=parse)``) and read without any
``Stage``: an observer, a report or a renderer can keep it, compare it, turn it into JSON.

A node's id is the name the run report gives its stage: its ``module.qualname``. Stages made by
one factory share that (the values they close over are in their keys, not their names), so their
ids add the stage's ``name=`` option, else a number in node order: ``module.make.<locals>.f[1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lakelet.stages._stage import Stage

__all__ = ["StageGraph", "StageNode", "build_graph"]


@dataclass(frozen=True)
class StageNode:
    """One stage of a run: its id, its ``module.qualname``, and the ids of the stages it reads."""

    id: str
    qualname: str
    upstream: tuple[str, ...]  # in the order of its bindings


@dataclass(frozen=True)
class StageGraph:
    """Every stage the targets need, each after the stages it reads."""

    nodes: tuple[StageNode, ...]
    targets: tuple[str, ...]  # the ids of the stages ``lakelet.run`` was given, in that order

    def node(self, node_id: str) -> StageNode:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """(upstream id, downstream id): one for each stage a stage reads."""
        return tuple((up, node.id) for node in self.nodes for up in node.upstream)

    def downstream(self, node_id: str) -> tuple[str, ...]:
        """The ids of the stages that read ``node_id``."""
        return tuple(node.id for node in self.nodes if node_id in node.upstream)


def build_graph(targets: tuple[Stage, ...]) -> tuple[StageGraph, dict[str, Stage]]:
    """The graph of ``targets``, and the stage behind each node id."""
    order: list[Stage] = []  # depth first from the targets, each stage after what it reads
    seen: set[Stage] = set()
    for target in targets:
        if target in seen:
            continue
        seen.add(target)
        stack = [(target, iter(_upstream(target)))]
        while stack:
            stage, reads = stack[-1]
            nxt = next((s for s in reads if s not in seen), None)
            if nxt is None:
                order.append(stack.pop()[0])
            else:
                seen.add(nxt)
                stack.append((nxt, iter(_upstream(nxt))))
    qualnames = [s.qualname for s in order]
    ids = {
        s: s.qualname
        if qualnames.count(s.qualname) == 1
        else f"{s.qualname}[{s.options.get('name') or qualnames[: i + 1].count(s.qualname)}]"
        for i, s in enumerate(order)
    }
    nodes = tuple(StageNode(ids[s], s.qualname, tuple(ids[u] for u in _upstream(s))) for s in order)
    return StageGraph(nodes, tuple(ids[t] for t in targets)), {ids[s]: s for s in order}


def _upstream(stage: Stage) -> list[Stage]:
    """The stages ``stage`` is bound to read, each once."""
    # imported here: reading a graph needs none of the stage machinery (code hashes, formats)
    from lakelet.stages._stage import Stage

    found: list[Stage] = []
    for value in stage.inputs.values():
        if isinstance(value, Stage) and value not in found:
            found.append(value)
    return found
