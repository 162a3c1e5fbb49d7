"""``lakelet.run``: the stage graph from the decorator bindings, run in parallel where it can be.

The parent works out every stage's key once (cheap), drops what is cached and
what only cached stages need, then submits each remaining stage to the
executor as soon as its upstream stages are done. A worker re-imports the stage
by module and name, opens the same lake (the parent's root when it can see it,
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

from ._current import current_lake
from ._durable import publish_file
from ._environ import patched_environ
from ._errors import InvalidArgumentError, LakeletError
from ._expiry import current_run_record
from ._file import File
from ._lake import Lake
from ._stage import Stage
from ._stage_key import Key


class RunError(LakeletError):
    """Stages failed; the others finished and their results are kept."""

    def __init__(self, message: str, failures: dict[str, str]) -> None:
        super().__init__(message)
        self.failures = failures  # stage -> traceback text


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


def _graph(targets: tuple[Stage, ...]) -> dict[str, Stage]:
    nodes: dict[str, Stage] = {}
    todo = list(targets)
    while todo:
        stage = todo.pop()
        if stage.qualname in nodes:
            continue
        nodes[stage.qualname] = stage
        todo += [s for s in stage.inputs.values() if isinstance(s, Stage)]
    return nodes


def _upstream(stage: Stage) -> list[str]:
    return [s.qualname for s in stage.inputs.values() if isinstance(s, Stage)]


def _lake_spec(lake: Lake) -> dict[str, Any]:
    return {"root": str(lake.root), "remote": lake.config.remote,
            "storage_options": lake.config.storage_options}


def _worker_lake(spec: dict[str, Any]) -> Lake:
    """The parent's lake when this worker shares its disk, else a cache root on the same remote."""
    import lakelet

    root = Path(spec["root"])
    if (root / "lakelet.toml").is_file():
        return lakelet.open(root)
    if not spec["remote"]:
        raise InvalidArgumentError(
            f"a worker cannot see the lake at {root} and the lake has no remote to share results through"
        )
    digest = hashlib.sha256(spec["remote"].encode()).hexdigest()[:16]
    cache = Path(os.environ.get("LAKELET_WORKER_ROOT", Path.home() / ".cache" / "lakelet" / digest))
    return lakelet.init(cache, remote=spec["remote"], storage_options=spec["storage_options"] or None)


def run_stage(module: str, qualname: str, spec: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Run one stage in a worker (a separate process or machine); returns how long and why it ran."""
    stage = importlib.import_module(module)
    for part in qualname.split("."):
        stage = getattr(stage, part)
    if not isinstance(stage, Stage):
        raise InvalidArgumentError(f"{module}.{qualname} is not a lakelet stage in the worker")
    lake = _worker_lake(spec)
    t0 = time.perf_counter()
    with patched_environ({"LAKELET_RUN_ID": run_id}):
        outcome = stage._call(lake, (), {}, explain=True)
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
    failures = _schedule(lake, nodes, needed, executor, max_workers, run_id, report)
    report.ended_at = datetime.now(UTC).isoformat()
    _save(lake, report)
    if failures:
        first = next(iter(failures))
        raise RunError(
            f"stage {first} failed ({failures[first].strip().splitlines()[-1]}); "
            f"{len(report.not_run)} stages downstream of it did not run; the others finished "
            f"(run {run_id})", failures)
    values = tuple(_result(lake, t, report.stages[t.qualname]["key"]) for t in targets)
    return values[0] if len(values) == 1 else values


def _needed(lake: Lake, targets: tuple[Stage, ...], nodes: dict[str, Stage], report: RunReport) -> set[str]:
    """Stages that must run: uncached ones a target needs, stopping at cached stages."""
    # Each key is worked out once for the whole run, and a stage's key holds its upstream keys. Raw
    # inputs do not all hold still meanwhile: a lake name is write-once, but a local file can be edited
    # while the run goes on (and raw("x") turns from the local file to the lake name if a stage binds
    # "x"). So these keys only choose what to submit: a worker works its stage's key out again when it
    # runs it, as any call does, and reports it; the results are read under the reported keys.
    keys: dict[Stage, Key] = {}
    needed: set[str] = set()
    todo = [t.qualname for t in targets]
    while todo:
        name = todo.pop()
        if name in needed or name in report.skipped:
            continue
        stage = nodes[name]
        key = stage._key_in(lake, keys).digest
        if current_run_record(lake, name, key)[1] is not None:
            report.skipped.append(name)
            report.stages[name] = {"status": "skipped", "duration_s": None, "why": "cached", "key": key}
            continue
        needed.add(name)
        todo += _upstream(stage)
    return needed


def _result(lake: Lake, stage: Stage, key: str) -> Any:
    """A target's result: the run record its worker bound, or the parent found, under ``key``.

    Not a new call: its key could differ from the worker's by now (a local input edited since), and
    it would run the stage again, here rather than in the executor.
    """
    if not stage.options.get("cache", True):  # as any call of it: run again (and return that value)
        return stage.run(lake, (), {})
    record_name, found = current_run_record(lake, stage.qualname, key)
    return stage._load(lake, File(record_name, lake=lake, record=found))


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


def _schedule(lake: Lake, nodes: dict[str, Stage], needed: set[str], executor: Any,
              max_workers: int | None, run_id: str, report: RunReport) -> dict[str, str]:
    display = _Display(report, len(needed))
    try:
        return _dispatch(lake, nodes, needed, executor, max_workers, run_id, report, display)
    finally:
        display.close()


def _dispatch(lake: Lake, nodes: dict[str, Stage], needed: set[str], executor: Any, max_workers: int | None,
              run_id: str, report: RunReport, display: _Display) -> dict[str, str]:
    pool, owned = _executor(executor, max_workers)
    spec = _lake_spec(lake)
    waiting = {n: {u for u in _upstream(nodes[n]) if u in needed} for n in needed}
    failures: dict[str, str] = {}
    running: dict[cf.Future[dict[str, Any]], str] = {}
    try:
        while waiting or running:
            ready = [n for n, deps in waiting.items() if not deps]
            for name in sorted(ready):
                del waiting[name]
                stage = nodes[name]
                module, qualname = stage.func.__module__, stage.func.__qualname__
                if pool is None:
                    future: cf.Future[dict[str, Any]] = cf.Future()
                    try:
                        future.set_result(run_stage(module, qualname, spec, run_id))
                    except Exception as e:  # reported below, like a worker's failure
                        future.set_exception(e)
                else:
                    future = pool.submit(run_stage, module, qualname, spec, run_id)
                running[future] = name
                display.running.add(name)
                display.update()
            if not running:
                break
            done, _ = cf.wait(list(running), return_when=cf.FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                display.running.discard(name)
                display.update()
                error = future.exception()
                if error is None:
                    report.stages[name] = future.result()
                    ran = report.stages[name]["status"] == "ran"
                    (report.ran if ran else report.skipped).append(name)
                    for deps in waiting.values():
                        deps.discard(name)
                    continue
                report.failed.append(name)
                failures[name] = _traceback_text(error)
                last_line = failures[name].strip().splitlines()[-1]
                report.stages[name] = {"status": "failed", "duration_s": None, "why": last_line}
                for lost in _descendants(name, waiting, nodes):
                    waiting.pop(lost, None)
                    report.not_run.append(lost)
                    report.stages[lost] = {"status": "not run", "duration_s": None, "why": f"{name} failed"}
    finally:
        if owned and pool is not None:
            pool.shutdown(wait=True)
    return failures


def _traceback_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def _descendants(name: str, waiting: dict[str, set[str]], nodes: dict[str, Stage]) -> list[str]:
    out, frontier = [], {name}
    while frontier:
        children = {n for n in waiting if n not in out and set(_upstream(nodes[n])) & frontier}
        out += sorted(children)
        frontier = children
    return out


def _save(lake: Lake, report: RunReport) -> None:
    body = json.dumps(report.__dict__, indent=1).encode()
    path = lake.root / "runs" / f"{report.run_id}.json"
    publish_file(path, body, lake._tmp, replace=True, point="run-report-written")
    syncer = lake._syncer()
    if syncer is not None:
        syncer.remote.put_bytes(f"runs/{report.run_id}.json", body)


def list_runs(lake: Lake) -> list[dict[str, Any]]:
    folder = lake.root / "runs"
    found = {p.stem: json.loads(p.read_bytes()) for p in folder.glob("*.json")} if folder.is_dir() else {}
    syncer = lake._syncer()
    if syncer is not None:
        for key in syncer.remote.find("runs/"):
            name = key.rsplit("/", 1)[-1].removesuffix(".json")
            if name not in found:
                found[name] = json.loads(syncer.remote.read_bytes(key) or b"{}")
    return sorted(found.values(), key=lambda r: r.get("started_at", ""))
