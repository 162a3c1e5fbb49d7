"""Scheduling a run: which stages must run, and handing each to the executor once its upstream
stages are done, telling the observer and filling the report as stages finish.

The parent works out every stage's key once (cheap), and drops what is cached and what only
cached stages need. Each remaining stage is started as soon as its upstream stages are done, so
independent branches run at the same time on a pool. A failing stage stops its descendants only;
everything else finishes, and running again resumes from the cache.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import TYPE_CHECKING, Any

from lakelet.runner._events import RunObserver, RunReport, StageFinished, StageStarted
from lakelet.runner._executors import Call, failure_text, lake_spec, start

if TYPE_CHECKING:
    from lakelet.facade._lake import Lake
    from lakelet.runner._graph import StageGraph
    from lakelet.stages._key import Key
    from lakelet.stages._stage import Stage

__all__ = ["Schedule", "plan"]


def plan(
    lake: Lake, graph: StageGraph, stages: dict[str, Stage], calls: dict[str, Call]
) -> tuple[list[str], list[StageFinished]]:
    """(the ids of the stages to run, in graph order; the cached stages the targets need).
    ``calls``: the arguments of the targets given them. A ``cache=False`` stage always runs."""
    # Each key is worked out once for the whole run, and a stage's key holds its upstream keys. Raw
    # inputs do not all hold still meanwhile: a lake name is write-once, but a local file can be edited
    # while the run goes on (and raw("x") turns from the local file to the lake name if a stage binds
    # "x"). So these keys only choose what to submit: a worker works its stage's key out again when it
    # runs it, as any call does, and reports it; the results are read under the reported keys.
    keys: dict[Stage, Key] = {}
    needed: set[str] = set()
    cached: dict[str, StageFinished] = {}
    todo = list(graph.targets)
    while todo:
        node_id = todo.pop()
        if node_id in needed or node_id in cached:
            continue
        stage = stages[node_id]
        if node_id in calls:  # its key with its arguments: not kept in ``keys``, read by none
            key = stage.key_for(lake, *calls[node_id], {**keys}).digest
        else:
            key = stage.key_in(lake, keys).digest
        if stage.options.get("cache", True) and stage.current_run(lake, key)[1] is not None:
            cached[node_id] = StageFinished(node_id, "skipped", None, "cached", key)
            continue
        needed.add(node_id)
        todo += graph.node(node_id).upstream
    return [n.id for n in graph.nodes if n.id in needed], list(cached.values())


class Schedule:
    """One run's scheduling: the report it fills, and the observer it tells."""

    def __init__(
        self,
        lake: Lake,
        graph: StageGraph,
        stages: dict[str, Stage],
        report: RunReport,
        observer: RunObserver,
        calls: dict[str, Call],
    ) -> None:
        self.lake = lake
        self.upstream = {node.id: node.upstream for node in graph.nodes}
        self.stages = stages
        self.report = report
        self.observer = observer
        self.failures: dict[str, str] = {}  # stage -> traceback
        self.calls = calls  # stage -> the arguments it is called with (targets given a partial)
        self.records: dict[str, str] = {}  # stage -> the run record its worker bound or found

    def finish(self, event: StageFinished) -> None:
        """Enter ``event`` in the report, then tell the observer."""
        r = self.report
        listed = {"ran": r.ran, "skipped": r.skipped, "failed": r.failed, "not run": r.not_run}
        listed[event.status].append(event.stage)
        entry: dict[str, Any] = {"status": event.status, "duration_s": event.duration_s, "why": event.why}
        if event.key is not None:
            entry["key"] = event.key
        r.stages[event.stage] = entry
        self.observer.stage_finished(event)

    def schedule(
        self, to_run: list[str], pool: cf.Executor | None, where: dict[str, tuple[str, str] | None]
    ) -> None:
        """Run ``to_run`` on ``pool`` (None: here, one at a time), each once its upstream stages are done;
        ``where``: the (module, attribute) a worker imports each by."""
        spec = lake_spec(self.lake)
        waiting = {s: set(self.upstream[s]).intersection(to_run) for s in to_run}
        running: dict[cf.Future[dict[str, Any]], str] = {}
        while True:
            ready = sorted(s for s, deps in waiting.items() if not deps)
            if not ready and not running:
                return
            for stage in ready:
                del waiting[stage]
                self.observer.stage_started(StageStarted(stage))
                call = self.calls.get(stage, ((), {}))
                future = start(pool, self.stages[stage], where[stage], spec, self.report.run_id, call)
                if pool is None:  # it ran just now: done before the next one starts
                    self._done(stage, future, waiting)
                else:
                    running[future] = stage
            if running:
                done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
                for future in done:
                    self._done(running.pop(future), future, waiting)

    def _done(self, stage: str, future: cf.Future[dict[str, Any]], waiting: dict[str, set[str]]) -> None:
        error = future.exception()
        if error is None:
            result = future.result()
            self.records[stage] = result.get("record", "")
            self.finish(
                StageFinished(stage, result["status"], result["duration_s"], result["why"], result["key"])
            )
            for deps in waiting.values():
                deps.discard(stage)
            return
        self.failures[stage] = failure_text(error)  # masked by the worker (StageFailure)
        self.finish(StageFinished(stage, "failed", None, self.failures[stage].strip().splitlines()[-1]))
        for lost in self._descendants(stage, waiting):
            del waiting[lost]
            self.finish(StageFinished(lost, "not run", None, f"{stage} failed"))

    def _descendants(self, stage: str, waiting: dict[str, set[str]]) -> list[str]:
        """The waiting stages that read ``stage``, directly or not: nearest first."""
        out: list[str] = []
        frontier = {stage}
        while frontier:
            children = {s for s in waiting if s not in out and frontier & set(self.upstream[s])}
            out += sorted(children)
            frontier = children
        return out
