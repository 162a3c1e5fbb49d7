"""``lakelet.run``: the entry point. It builds the graph (``_graph``), plans and schedules it
(``_schedule``) on the executor asked for (``_executors``), tells the observer (``_events``),
saves the run report and returns the targets' results.

A stage is the object, as in a plain call, not its ``module.qualname``: two stages made by one
factory share that, so the report names them apart. The targets' results are the run records under
the keys the report holds.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from lakelet.core._names import validate_segment
from lakelet.core.errors import CorruptRecordError, InvalidArgumentError, RunError
from lakelet.facade._current import current_lake
from lakelet.facade._lake import Lake
from lakelet.lake._run_record import ignore
from lakelet.lake._run_reports import save_report
from lakelet.runner import _map  # noqa: F401  (fills Stage.map's hook)
from lakelet.runner._events import RunObserver, RunReport, RunStarted
from lakelet.runner._executors import address, open_executor, run_stage
from lakelet.runner._graph import build_graph
from lakelet.runner._schedule import Schedule, plan
from lakelet.stages._stage import Stage

# run_stage, the function a worker is sent, lived here: ``lakelet.runner._run.run_stage`` still imports
__all__ = ["run", "run_stage"]

_OBSERVER_METHODS = ("started", "stage_started", "stage_finished", "finished")


class _Silent(RunObserver):
    """No observer: a run draws and prints nothing."""


def run(
    *targets: Stage,
    executor: Any = None,
    max_workers: int | None = None,
    run_id: str | None = None,
    observer: RunObserver | None = None,
) -> Any:
    """Run ``targets`` and whatever they need that is not cached; returns their outputs
    (one value, or a tuple for several targets). ``observer`` is told what the run does."""
    if not targets or not all(isinstance(t, Stage) for t in targets):
        raise InvalidArgumentError("run() takes one or more @lakelet.stage functions")
    missing = [m for m in _OBSERVER_METHODS if not callable(getattr(observer, m, None))]
    if observer is not None and missing:
        raise InvalidArgumentError(f"observer= lacks {', '.join(missing)}: see lakelet.RunObserver")
    observer = observer or _Silent()
    lake = current_lake()
    # it names the report's file and the run's scoped store: checked before anything runs
    run_id = validate_segment(run_id, "run id") if run_id is not None else _new_run_id()
    report = RunReport(run_id, datetime.now(UTC).isoformat())
    graph, stages = build_graph(targets)
    to_run, cached = plan(lake, graph, stages)
    # before anything runs: a stage a worker cannot import would fail only once its turn came
    where = {s: None if executor is None else address(stages[s], s) for s in to_run}
    schedule = Schedule(lake, graph, stages, report, observer)
    with open_executor(executor, max_workers) as pool:
        observer.started(RunStarted(run_id, report.started_at, graph, tuple(to_run)))
        for event in cached:
            schedule.finish(event)
        schedule.schedule(to_run, pool, where)
    report.ended_at = datetime.now(UTC).isoformat()
    save_report(lake.context, report.run_id, report.__dict__)
    observer.finished(report)
    failures = schedule.failures
    if failures:
        first = next(iter(failures))
        raise RunError(
            f"stage {first} failed ({failures[first].strip().splitlines()[-1]}); "
            f"{len(report.not_run)} stages downstream of it did not run; the others finished "
            f"(run {run_id})",
            failures,
        )
    values = tuple(_result(lake, stages[t], report.stages[t]["key"]) for t in graph.targets)
    return values[0] if len(values) == 1 else values


def _new_run_id() -> str:
    return f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _result(lake: Lake, stage: Stage, key: str) -> Any:
    """A target's result: the run record its worker bound, or the parent found, under ``key``.

    Not a new call: its key could differ from the worker's by now (a local input edited since), and
    it would run the stage again, here rather than in the executor.
    """
    if not stage.options.get("cache", True):  # as any call of it: run again (and return that value)
        return stage.run(lake, (), {})
    _, found = stage.current_run(lake, key)
    if found is not None:
        try:
            return stage.load_output(lake, found)
        except CorruptRecordError as e:
            ignore(lake.context, e, "the stage runs again")
    # refused since the worker ran (its output cannot be loaded here): a plain call passes over
    # that record, as any call does, and runs the stage again
    return stage.run(lake, (), {})
