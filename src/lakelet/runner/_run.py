"""``lakelet.run``: the entry point. It builds the graph (``_graph``), plans and schedules it
(``_schedule``) on the executor asked for (``_executors``), tells the observer (``_events``),
saves the run report and returns the targets' results.

A stage is the object, as in a plain call, not its ``module.qualname``: two stages made by one
factory share that, so the report names them apart. The targets' results are the run records under
the keys the report holds.
"""

from __future__ import annotations

import functools
import secrets
from datetime import UTC, datetime
from typing import Any

from lakelet.core._names import validate_segment
from lakelet.core._progress import Progress
from lakelet.core.errors import CorruptRecordError, IntegrityError, InvalidArgumentError, RunError
from lakelet.facade._current import current_lake
from lakelet.facade._lake import Lake
from lakelet.facade._progress_bar import ProgressOption, chosen
from lakelet.lake._run_lookup import ignore, read_run_record
from lakelet.lake._run_record import RunRecord
from lakelet.lake._run_reports import save_report
from lakelet.runner import _map  # noqa: F401  (fills Stage.map's hook)
from lakelet.runner._events import RunObserver, RunReport, RunStarted, StageFinished, StageStarted
from lakelet.runner._executors import Call, address, open_executor, run_stage
from lakelet.runner._graph import build_graph
from lakelet.runner._schedule import Schedule, plan
from lakelet.stages._stage import Stage
from lakelet.storage._scopes import LAKE

# run_stage, the function a worker is sent, lived here: ``lakelet.runner._run.run_stage`` still imports
__all__ = ["run", "run_stage"]

_OBSERVER_METHODS = ("started", "stage_started", "stage_finished", "finished")


class _Silent(RunObserver):
    """No observer: a run prints nothing (a bar of stages aside, ``progress=``)."""


class _Counted(RunObserver):
    """The observer asked for, and a progress of stages: told how many will run, advanced by
    one as each of those finishes (ran, failed, or not run because an upstream one failed)."""

    def __init__(self, inner: RunObserver, progress: Progress) -> None:
        self._inner = inner
        self._progress = progress
        self._to_run: set[str] = set()

    def started(self, run: RunStarted) -> None:
        self._to_run = set(run.to_run)
        self._progress.add_total(len(self._to_run))
        self._inner.started(run)

    def stage_started(self, event: StageStarted) -> None:
        self._inner.stage_started(event)

    def stage_finished(self, event: StageFinished) -> None:
        if event.stage in self._to_run:
            self._progress.advance(1)
        self._inner.stage_finished(event)

    def finished(self, report: RunReport) -> None:
        self._inner.finished(report)


def run(
    *targets: Stage | functools.partial[Any],
    executor: Any = None,
    max_workers: int | None = None,
    run_id: str | None = None,
    observer: RunObserver | None = None,
    progress: ProgressOption = None,
) -> Any:
    """Run ``targets`` and whatever they need that is not cached; returns their outputs
    (one value, or a tuple for several targets). A target may be ``functools.partial(stage,
    *args, **kwargs)``: the stage called with those arguments, keyed as that call is.
    ``observer`` is told what the run does. ``progress``: one bar of the stages that run
    when a person watches (None, the default: stderr a terminal, or Jupyter), none (False),
    always (True), or a Progress told the number of stages to run and each one done."""
    stage_targets, calls = _targets(targets)
    missing = [m for m in _OBSERVER_METHODS if not callable(getattr(observer, m, None))]
    if observer is not None and missing:
        raise InvalidArgumentError(f"observer= lacks {', '.join(missing)}: see lakelet.RunObserver")
    names = ", ".join(s.qualname for s in stage_targets)
    with chosen(progress, f"running {names}", unit="items") as shown:
        return _run(
            stage_targets, calls, executor, max_workers, run_id, _Counted(observer or _Silent(), shown)
        )


def _run(
    stage_targets: tuple[Stage, ...],
    calls: dict[Stage, Call],
    executor: Any,
    max_workers: int | None,
    run_id: str | None,
    observer: RunObserver,
) -> Any:
    lake = current_lake()
    # it names the report's file and the run's scoped store: checked before anything runs
    run_id = validate_segment(run_id, "run id") if run_id is not None else _new_run_id()
    report = RunReport(run_id, datetime.now(UTC).isoformat())
    graph, stages = build_graph(stage_targets)
    node_calls = {node: calls[stage] for node, stage in stages.items() if stage in calls}
    for node in node_calls:
        if graph.downstream(node):
            raise InvalidArgumentError(
                f"stage {node} is given arguments (functools.partial) and is read by another stage "
                "of the run, which calls it without: run them in two runs"
            )
    to_run, cached = plan(lake, graph, stages, node_calls)
    # before anything runs: a stage a worker cannot import would fail only once its turn came
    where = {s: None if executor is None else address(stages[s], s) for s in to_run}
    schedule = Schedule(lake, graph, stages, report, observer, node_calls)
    modules = [w[0] for w in where.values() if w is not None]
    with open_executor(executor, max_workers, modules) as pool:
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
    values = tuple(
        _result(
            lake, stages[t], report.stages[t]["key"], schedule.records.get(t, ""), node_calls.get(t, ((), {}))
        )
        for t in graph.targets
    )
    return values[0] if len(values) == 1 else values


def _targets(targets: tuple[Any, ...]) -> tuple[tuple[Stage, ...], dict[Stage, Call]]:
    """The stages ``run`` was given, and the arguments of those given as a partial."""
    stages: list[Stage] = []
    calls: dict[Stage, Call] = {}
    for target in targets:
        if isinstance(target, functools.partial) and isinstance(target.func, Stage):
            if target.func in calls or target.func in stages:
                raise InvalidArgumentError(
                    f"run() got stage {target.func.qualname} twice: to call it on many "
                    "arguments, use its .map()"
                )
            calls[target.func] = (tuple(target.args), dict(target.keywords))
            target.func.key_for(current_lake(), *calls[target.func], {})  # bad arguments: refused now
            target = target.func
        elif target in calls:
            raise InvalidArgumentError(
                f"run() got stage {target.qualname} twice: to call it on many arguments, use its .map()"
            )
        if not isinstance(target, Stage):
            raise InvalidArgumentError(
                "run() takes one or more @lakelet.stage functions, or functools.partial(stage, ...)"
            )
        stages.append(target)
    if not stages:
        raise InvalidArgumentError("run() takes one or more @lakelet.stage functions")
    return tuple(stages), calls


def _new_run_id() -> str:
    return f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


def _result(lake: Lake, stage: Stage, key: str, record: str, call: Call) -> Any:
    """A target's result: the run record its worker bound, or the parent found, under its key.

    Not a new call: its key could differ from the worker's by now (a local input edited since), and
    it would run the stage again, here rather than in the executor. A ``cache=False`` stage's
    result is the generation its worker bound in this run.
    """
    if not stage.options.get("cache", True) and record:
        found = _by_name(lake, record)
    else:
        _, found = stage.current_run(lake, key)
    if found is not None:
        try:
            return stage.load_output(lake, found)
        except CorruptRecordError as e:
            ignore(lake.context, e, "the stage runs again")
    # refused since the worker ran (its output cannot be loaded here): a plain call passes over
    # that record, as any call does, and runs the stage again
    return stage.run(lake, *call)


def _by_name(lake: Lake, name: str) -> RunRecord | None:
    found = lake.context.lookup(LAKE, name)
    if found is None or found.removed_at is not None:
        return None
    try:
        return read_run_record(lake.context, found)
    except (CorruptRecordError, IntegrityError) as e:
        ignore(lake.context, e, "the stage runs again")
        return None
