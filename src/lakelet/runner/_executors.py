"""Where a stage runs: choosing the executor, and what a worker does to run one stage.

``executor=`` is None (in this process), ``"processes"`` (a process pool of ``max_workers``), any
``concurrent.futures.Executor``, a ``dask.distributed.Client`` or ``"dask://host:port"``. A stage
goes to a worker as the (module, attribute) it is imported by, not pickled: two stages made by
one factory share their ``module.qualname``, so a worker imports such a stage by the module-level
name that holds it. The worker opens the same lake (the parent's root when it can see it, else a
local cache root of its own on the shared remote) and calls the stage, which finds its inputs bound
by the upstream workers. ``run_stage`` is the function a worker is sent.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import hashlib
import importlib
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

from lakelet.core._environ import patched_environ
from lakelet.core.errors import InvalidArgumentError
from lakelet.facade._current import running_in
from lakelet.facade._file import File
from lakelet.facade._lake import Lake, init, open_lake
from lakelet.stages._codehash import adopt_distributions, known_distributions
from lakelet.stages._many import ItemDone, call_many
from lakelet.stages._secret_env import handed_secrets, mask_secrets
from lakelet.stages._stage import Stage

__all__ = [
    "StageFailure",
    "address",
    "failure_text",
    "from_wire",
    "lake_spec",
    "open_executor",
    "run_items",
    "run_stage",
    "start",
    "to_wire",
    "warm_up",
]


@contextlib.contextmanager
def open_executor(
    executor: Any, max_workers: int | None, modules: Collection[str] = ()
) -> Iterator[cf.Executor | None]:
    """The pool ``executor=`` names (None: in this process), shut down at the end if made here.
    A process pool made here has its workers import ``modules`` (the stages') before it is used."""
    pool, owned = _choose(executor, max_workers, sorted(set(modules)))
    try:
        yield pool
    finally:
        if owned and pool is not None:
            pool.shutdown(wait=True)


def _choose(executor: Any, max_workers: int | None, modules: list[str]) -> tuple[cf.Executor | None, bool]:
    """(executor, whether we own it and must shut it down)."""
    if executor is None:
        return None, False
    if executor == "processes":
        # Not fork: a forked child of a process with threads (a test runner, a notebook, the
        # pool's own feeder thread) may inherit a lock held by another thread, and then hang,
        # as did ProcessPoolExecutor.shutdown about one run in ten. A fork server forks from a
        # clean single-threaded process; workers import the stage's module by name, with the
        # parent's sys.path, so scripts need the usual `if __name__ == "__main__":` guard.
        # The server was started once, with the environment of that moment: each worker takes
        # the parent's environment of now, as a forked one would (secrets, credentials, flags).
        context = _fork_server()
        pool = cf.ProcessPoolExecutor(
            max_workers=max_workers,
            mp_context=context,
            initializer=_adopt_parent,
            initargs=(dict(os.environ), known_distributions()),
        )
        # Such a pool starts a worker only when a task finds none idle, and a new worker takes
        # a while to import lakelet: two stages that could run at once would run one after the
        # other on the first worker. So every worker is started now, all at once.
        workers = max_workers or os.cpu_count() or 1
        cf.wait([pool.submit(_ready, modules) for _ in range(workers)])
        return pool, True
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


def _fork_server() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    # The server imports lakelet's worker side once, so each worker forks with it imported
    # (~0.2 s of CPU a worker otherwise, on the cores the stage's work needs). Only lakelet:
    # the user's modules may do anything when imported. Read when the server starts, i.e.
    # by the first pool of the process; "__main__" is the default the list replaces.
    context.set_forkserver_preload(["__main__", __name__])
    return context


def warm_up(executor: Any) -> None:
    """Start the fork server a ``"processes"`` pool forks its workers from, without waiting for
    it: it imports lakelet (~0.15 s) on another core while the caller works out what to run
    (``Stage.map`` keys and looks up every item first). Started once per process, then kept."""
    if executor == "processes":
        _fork_server()
        forkserver.ensure_running()


def _ready(modules: list[str]) -> None:
    """A worker's first task: import the stages' modules (lakelet's worker side, this module, is
    imported by now), so that the first stage a worker runs does not wait for them."""
    for module in modules:
        with contextlib.suppress(Exception):  # the stage itself reports what fails to import
            importlib.import_module(module)


def _adopt_parent(environ: dict[str, str], distributions: dict[str, list[str]] | None) -> None:
    """What a forked worker would have inherited: the environment, and the package lookup a
    code hash needs (a second per process to work out)."""
    os.environ.clear()
    os.environ.update(environ)
    adopt_distributions(distributions)


def address(stage: Stage, label: str) -> tuple[str, str]:
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
        "import it: assign it to one (e.g. `a = make(1)` at module level), or run with executor=None"
    )


def _attribute(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def lake_spec(lake: Lake) -> dict[str, Any]:
    """What a worker needs to open ``lake``: plain values, sent with each stage."""
    return {
        "root": str(lake.root),
        "remote": lake.config.remote,
        "storage_options": lake.config.storage_options,
    }


@dataclass(frozen=True)
class _FileRef:
    """A ``File`` argument on its way to a worker: its name (a File holds its open lake)."""

    name: str


def to_wire(value: Any) -> Any:
    """Arguments as a worker is sent them: each ``File`` (in lists, tuples, dicts) by name."""
    if isinstance(value, File):
        return _FileRef(value.name)
    if isinstance(value, list | tuple):
        return type(value)(to_wire(v) for v in value) if type(value) in (list, tuple) else value
    if type(value) is dict:
        return {k: to_wire(v) for k, v in value.items()}
    return value


def from_wire(value: Any, lake: Lake) -> Any:
    """``to_wire``'s arguments back, each File a handle on the worker's lake."""
    if isinstance(value, _FileRef):
        return lake.file(value.name)
    if type(value) in (list, tuple):
        return type(value)(from_wire(v, lake) for v in value)
    if type(value) is dict:
        return {k: from_wire(v, lake) for k, v in value.items()}
    return value


Call = tuple[tuple[Any, ...], dict[str, Any]]


def start(
    pool: cf.Executor | None,
    stage: Stage,
    where: tuple[str, str] | None,
    spec: dict[str, Any],
    run_id: str,
    call: Call = ((), {}),
) -> cf.Future[dict[str, Any]]:
    """Hand ``stage`` to ``pool`` (imported there by ``where``), or run it here and now (no pool);
    ``call``: its (args, kwargs)."""
    if pool is not None:
        if where is None:  # run() works every address out before anything runs
            raise ValueError(f"no address to import {stage.qualname} by in a worker")
        return pool.submit(run_stage, *where, spec, run_id, to_wire(call))
    future: cf.Future[dict[str, Any]] = cf.Future()
    try:
        future.set_result(_run_here(stage, _worker_lake(spec), run_id, call))
    except Exception as e:  # reported like a worker's failure
        future.set_exception(e)
    return future


def _worker_lake(spec: dict[str, Any]) -> Lake:
    """The parent's lake when this worker shares its disk, else a cache root on the same remote."""
    root = Path(spec["root"])
    try:
        st = os.stat(root / "lakelet.toml")
    except OSError:
        pass
    else:
        # opened once per worker, not once per task (a map sends ~20 a worker), and again
        # when its configuration file may have changed; only the last lake is kept (its
        # index connection stays open), the one the tasks of a map share
        seen = (st.st_ino, st.st_mtime_ns, st.st_size)
        kept = _opened.get(spec["root"])
        if kept is None or kept[0] != seen:
            _opened.clear()
            kept = _opened[spec["root"]] = (seen, open_lake(root))
        return kept[1]
    if not spec["remote"]:
        raise InvalidArgumentError(
            f"a worker cannot see the lake at {root} and the lake has no remote to share results through"
        )
    digest = hashlib.sha256(spec["remote"].encode()).hexdigest()[:16]
    cache = Path(os.environ.get("LAKELET_WORKER_ROOT", Path.home() / ".cache" / "lakelet" / digest))
    return init(cache, remote=spec["remote"], storage_options=spec["storage_options"] or None)


_opened: dict[str, tuple[tuple[int, int, int], Lake]] = {}  # root: (its config file's stat, the lake)


def _imported(module: str, attribute: str) -> Stage:
    stage = _attribute(importlib.import_module(module), attribute)
    if not isinstance(stage, Stage):
        raise InvalidArgumentError(f"{module}.{attribute} is not a lakelet stage in the worker")
    return stage


def run_stage(
    module: str, attribute: str, spec: dict[str, Any], run_id: str, call: Call = ((), {})
) -> dict[str, Any]:
    """Run one stage in a worker (a separate process or machine); returns how long and why it ran."""
    lake = _worker_lake(spec)
    with running_in(lake):  # the lake of what the stage calls and writes (File(), other stages)
        return _run_here(_imported(module, attribute), lake, run_id, from_wire(call, lake))


def run_items(
    module: str,
    attribute: str,
    spec: dict[str, Any],
    items: list[tuple[int, Call]],
    looked_up: dict[int, tuple[str, str]] | None = None,
) -> list[ItemDone]:
    """Run a chunk of a map's items in a worker, in group commits (``_many``, which says what
    ``looked_up`` is); a failed item's traceback comes back with the secret values lakelet
    handed the stage masked."""
    stage = _imported(module, attribute)
    lake = _worker_lake(spec)
    calls = [(index, from_wire(call, lake)) for index, call in items]
    with handed_secrets() as handed, running_in(lake):  # as in run_stage
        done = call_many(stage, lake, calls, looked_up=looked_up, remember=False)
    return [replace(d, error=mask_secrets(d.error, handed)) if d.error else d for d in done]


class StageFailure(Exception):
    """A stage's failure as it leaves the worker: only its traceback text, with the secret values
    lakelet handed the stage masked. The exception itself may hold a value in its message, its
    arguments or its causes, and a worker process would pickle all of that back to the parent,
    which reports it, stores it in the run report and raises it in RunError."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def failure_text(error: BaseException) -> str:
    """The traceback text of a failed stage, as a run reports it."""
    if isinstance(error, StageFailure):
        return error.text
    return "".join(traceback.format_exception(error))


def _run_here(stage: Stage, lake: Lake, run_id: str, call: Call) -> dict[str, Any]:
    t0 = time.perf_counter()
    with handed_secrets() as handed, patched_environ({"LAKELET_RUN_ID": run_id}):
        try:
            outcome = stage.call_in(lake, *call, explain=True)
        except Exception as error:
            # the text alone, masked; `from None`: the original must not travel as its cause
            raise StageFailure(mask_secrets(failure_text(error), handed)) from None
    if not outcome.ran:  # bound since the parent looked, by another run or machine
        return {
            "status": "skipped",
            "duration_s": None,
            "why": outcome.why,
            "key": outcome.key,
            "record": outcome.record,
        }
    return {
        "status": "ran",
        "duration_s": round(time.perf_counter() - t0, 6),
        "why": outcome.why,
        "key": outcome.key,
        "record": outcome.record,
    }
