"""``lakelet.run``: the stage graph from the decorator bindings, run in parallel where it can be.

The parent works out every stage's key once (cheap), drops what is cached and
what only cached stages need, then submits each remaining stage to the
executor as soon as its upstream stages are done. A stage is the object, as in
a plain call, not its ``module.qualname``: two stages made by one factory share
that (the folder of their run records; the values they close over are in their
keys), so the report names them apart and a worker imports each by the module
attribute that holds it. A worker opens the same lake (the parent's root when it can see it,
else a local cache root of its own on the shared remote) and calls the stage,
which finds its inputs bound by the upstream workers. The targets' results are
the run records under the keys the report holds. A failing stage stops its
descendants only; everything else finishes, and running again resumes from
the cache.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import json
import os
import secrets
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lakelet.facade._current import current_lake
from lakelet.core._environ import patched_environ
from lakelet.core.errors import InvalidArgumentError, LakeletError, RunError
from lakelet.lake._expiry import current_run_record
from lakelet.facade._file import File
from lakelet.facade._lake import Lake, init, open_lake
from lakelet.lake._run_reports import save_report
from lakelet.stages._stage import Stage
from lakelet.stages._key import Key


@dataclass
class RunReport:
    run_id: str
    started_at: str
    ended_at: str = ""
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # descendants of a failure
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> status, duration_s, why, key


def _graph(targets: tuple[Stage, ...]) -> dict[Stage, str]:
    """Every stage the targets need, with the name the report gives it."""
    found: list[Stage] = []
    todo = list(reversed(targets))
    while todo:
        stage = todo.pop()
        if stage not in found:
            found.append(stage)
            todo += reversed(_upstream(stage))
    shared = [s.qualname for s in found]
    return {s: s.qualname if shared.count(s.qualname) == 1
            else f"{s.qualname}[{s.options.get('name') or shared[:i + 1].count(s.qualname)}]"
            for i, s in enumerate(found)}


def _upstream(stage: Stage) -> list[Stage]:
    return [s for s in stage.inputs.values() if isinstance(s, Stage)]


def _address(stage: Stage, label: str) -> tuple[str, str]:
    """(module, attribute) a worker imports ``stage`` by: its qualname, else the module-level name
    that holds it (a stage made by a factory)."""
    module = sys.modules.get(stage.func.__module__)
    if module is not None:
        if _attribute(module, stage.func.__qualname__) is stage:
            return module.__name__, stage.func.__qualname__
        for name, value in vars(module).items():
            if value is stage:
                return module.__name__, name
    raise InvalidArgumentError(
        f"stage {label} is not a module-level name of {stage.func.__module__}, so a worker cannot "
        "import it: assign it to one (e.g. `a = make(1)` at module level), or run with executor=None")


def _attribute(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def _lake_spec(lake: Lake) -> dict[str, Any]:
    return {"root": str(lake.root), "remote": lake.config.remote,
            "storage_options": lake.config.storage_options}


def _worker_lake(spec: dict[str, Any]) -> Lake:
    """The parent's lake when this worker shares its disk, else a cache root on the same remote."""
    root = Path(spec["root"])
    if (root / "lakelet.toml").is_file():
        return open_lake(root)
    if not spec["remote"]:
        raise InvalidArgumentError(
            f"a worker cannot see the lake at {root} and the lake has no remote to share results through"
        )
    digest = hashlib.sha256(spec["remote"].encode()).hexdigest()[:16]
    cache = Path(os.environ.get("LAKELET_WORKER_ROOT", Path.home() / ".cache" / "lakelet" / digest))
    return init(cache, remote=spec["remote"], storage_options=spec["storage_options"] or None)


def run_stage(module: str, attribute: str, spec: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Run one stage in a worker (a separate process or machine); returns how long and why it ran."""
    stage = _attribute(importlib.import_module(module), attribute)
    if not isinstance(stage, Stage):
        raise InvalidArgumentError(f"{module}.{attribute} is not a lakelet stage in the worker")
    return _run_here(stage, spec, run_id)


def _run_here(stage: Stage, spec: dict[str, Any], run_id: str) -> dict[str, Any]:
    lake = _worker_lake(spec)
    t0 = time.perf_counter()
    with patched_environ({"LAKELET_RUN_ID": run_id}):
        outcome = stage.call_in(lake, (), {}, explain=True)
    if not outcome.ran:  # bound since the parent looked, by another run or machine
        return {"status": "skipped", "duration_s": None, "why": outcome.why, "key": outcome.key}
    return {"status": "ran", "duration_s": round(time.perf_counter() - t0, 6), "why": outcome.why,
            "key": outcome.key}


def _executor(executor: Any, max_workers: int | None) -> tuple[cf.Executor | None, bool]:
    """(executor, whether we own it and must shut it down)."""
    if executor is None:
        return None, False
    if executor == "processes":
        return cf.ProcessPoolExecutor(max_workers=max_workers), True
    if isinstance(executor, str) and executor.startswith("dask://"):
        from distributed import Client

        client = Client(executor.replace("dask://", "tcp://", 1))
        return client.get_executor(), True
    if isinstance(executor, cf.Executor):
        return executor, False
    if type(executor).__name__ == "Client" and hasattr(executor, "get_executor"):
        return executor.get_executor(), False
    raise InvalidArgumentError(
        'executor must be None, "processes", a concurrent.futures.Executor, a dask Client '
        f'or "dask://host:port", not {executor!r}'
    )


def run(*targets: Stage, executor: Any = None, max_workers: int | None = None,
        run_id: str | None = None) -> Any:
    """Run ``targets`` and whatever they need that is not cached; returns their outputs
    (one value, or a tuple for several targets)."""
    if not targets or not all(isinstance(t, Stage) for t in targets):
        raise InvalidArgumentError("run() takes one or more @lakelet.stage functions")
    lake = current_lake()
    run_id = run_id or f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    report = RunReport(run_id, datetime.now(UTC).isoformat())
    nodes = _graph(targets)
    needed = _needed(lake, targets, nodes, report)
    # before anything runs: a stage a worker cannot import would fail only once its turn came
    where = {s: None if executor is None else _address(s, nodes[s]) for s in needed}
    failures = _schedule(lake, nodes, where, executor, max_workers, run_id, report)
    report.ended_at = datetime.now(UTC).isoformat()
    _save(lake, report)
    if failures:
        first = next(iter(failures))
        raise RunError(
            f"stage {first} failed ({failures[first].strip().splitlines()[-1]}); "
            f"{len(report.not_run)} stages downstream of it did not run; the others finished "
            f"(run {run_id})", failures)
    values = tuple(_result(lake, t, report.stages[nodes[t]]["key"]) for t in targets)
    return values[0] if len(values) == 1 else values


def _needed(lake: Lake, targets: tuple[Stage, ...], nodes: dict[Stage, str], report: RunReport) -> set[Stage]:
    """Stages that must run: uncached ones a target needs, stopping at cached stages."""
    # Each key is worked out once for the whole run, and a stage's key holds its upstream keys. Raw
    # inputs do not all hold still meanwhile: a lake name is write-once, but a local file can be edited
    # while the run goes on (and raw("x") turns from the local file to the lake name if a stage binds
    # "x"). So these keys only choose what to submit: a worker works its stage's key out again when it
    # runs it, as any call does, and reports it; the results are read under the reported keys.
    keys: dict[Stage, Key] = {}
    needed: set[Stage] = set()
    todo = list(targets)
    while todo:
        stage = todo.pop()
        name = nodes[stage]
        if stage in needed or name in report.skipped:
            continue
        key = stage.key_in(lake, keys).digest
        if current_run_record(lake.context, stage.qualname, key)[1] is not None:
            report.skipped.append(name)
            report.stages[name] = {"status": "skipped", "duration_s": None, "why": "cached", "key": key}
            continue
        needed.add(stage)
        todo += _upstream(stage)
    return needed


def _result(lake: Lake, stage: Stage, key: str) -> Any:
    """A target's result: the run record its worker bound, or the parent found, under ``key``.

    Not a new call: its key could differ from the worker's by now (a local input edited since), and
    it would run the stage again, here rather than in the executor.
    """
    if not stage.options.get("cache", True):  # as any call of it: run again (and return that value)
        return stage.run(lake, (), {})
    record_name, found = current_run_record(lake.context, stage.qualname, key)
    return stage.load_output(lake, File(record_name, lake=lake, record=found))


class _Display:
    """Stages done / running / skipped / failed, redrawn in place on a terminal; silent elsewhere."""

    def __init__(self, report: RunReport, total: int) -> None:
        self.report = report
        self.total = total
        self.running: set[str] = set()
        self.live = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self._render(), console=Console(stderr=True), transient=True,
                             refresh_per_second=8)
            self.live.start()

    def _render(self) -> Any:
        from rich.text import Text

        r = self.report
        running = ", ".join(sorted(n.rsplit(".", 1)[-1] for n in self.running)) or "-"
        return Text(f"run {r.run_id}: {len(r.ran)}/{self.total} done, {len(r.skipped)} skipped, "
                    f"{len(r.failed)} failed; running: {running}")

    def update(self) -> None:
        if self.live is not None:
            self.live.update(self._render())

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def _schedule(lake: Lake, nodes: dict[Stage, str], where: dict[Stage, Any], executor: Any,
              max_workers: int | None, run_id: str, report: RunReport) -> dict[str, str]:
    display = _Display(report, len(where))
    try:
        return _dispatch(lake, nodes, where, executor, max_workers, run_id, report, display)
    finally:
        display.close()


def _dispatch(lake: Lake, nodes: dict[Stage, str], where: dict[Stage, Any], executor: Any,
              max_workers: int | None, run_id: str, report: RunReport, display: _Display) -> dict[str, str]:
    """``where``: each stage to run, with the (module, attribute) a worker imports it by."""
    pool, owned = _executor(executor, max_workers)
    spec = _lake_spec(lake)
    waiting = {s: {u for u in _upstream(s) if u in where} for s in where}
    failures: dict[str, str] = {}
    running: dict[cf.Future[dict[str, Any]], Stage] = {}
    try:
        while waiting or running:
            ready = [s for s, deps in waiting.items() if not deps]
            for stage in sorted(ready, key=nodes.__getitem__):
                del waiting[stage]
                if pool is None:
                    future: cf.Future[dict[str, Any]] = cf.Future()
                    try:
                        future.set_result(_run_here(stage, spec, run_id))
                    except Exception as e:  # reported below, like a worker's failure
                        future.set_exception(e)
                else:
                    future = pool.submit(run_stage, *where[stage], spec, run_id)
                running[future] = stage
                display.running.add(nodes[stage])
                display.update()
            if not running:
                break
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for future in done:
                stage = running.pop(future)
                name = nodes[stage]
                display.running.discard(name)
                display.update()
                error = future.exception()
                if error is None:
                    report.stages[name] = future.result()
                    ran = report.stages[name]["status"] == "ran"
                    (report.ran if ran else report.skipped).append(name)
                    for deps in waiting.values():
                        deps.discard(stage)
                    continue
                report.failed.append(name)
                failures[name] = _traceback_text(error)
                last_line = failures[name].strip().splitlines()[-1]
                report.stages[name] = {"status": "failed", "duration_s": None, "why": last_line}
                for lost in _descendants(stage, waiting, nodes):
                    waiting.pop(lost, None)
                    report.not_run.append(nodes[lost])
                    report.stages[nodes[lost]] = {"status": "not run", "duration_s": None,
                                                  "why": f"{name} failed"}
    finally:
        if owned and pool is not None:
            pool.shutdown(wait=True)
    return failures


def _traceback_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def _descendants(stage: Stage, waiting: dict[Stage, set[Stage]], nodes: dict[Stage, str]) -> list[Stage]:
    out, frontier = [], {stage}
    while frontier:
        children = {s for s in waiting if s not in out and set(_upstream(s)) & frontier}
        out += sorted(children, key=nodes.__getitem__)
        frontier = children
    return out


def _save(lake: Lake, report: RunReport) -> None:
    save_report(lake.context, report.run_id, report.__dict__)
