"""``Stage.map``: one call of a stage per item, on ``lakelet.run``'s executors.

The parent works out every item's key (cheap) and looks each distinct key up; only the misses
are run. In process they run here; on a pool they go in chunks, each chunk one task that runs
its items and binds them in group commits (``stages._many``), so a worker pays neither a task
nor two segments per item. Results are loaded from the run records, in input order. Failed
items do not stop the others; ``RunError`` names them at the end.

What a map tells: ``progress`` (one bar of items when a person watches, or the library's
``Progress`` callback: ``add_total`` with the number of items, ``advance(1)`` per item done),
and one INFO line on the ``lakelet.stage``
logger ("1,000 items: 12 ran, 988 cached, 0 failed"), not a line per call.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import math
import os
import traceback
from collections import Counter
from typing import Any

from lakelet.core._progress import Progress
from lakelet.core.errors import CorruptRecordError, IntegrityError, InvalidArgumentError, RunError
from lakelet.facade._current import current_lake
from lakelet.facade._lake import Lake
from lakelet.facade._progress_bar import ProgressOption, chosen
from lakelet.lake._run_lookup import current_runs, ignore, read_run_cached
from lakelet.runner._executors import (
    Call,
    address,
    lake_spec,
    open_executor,
    run_items,
    to_wire,
    warm_up,
)
from lakelet.stages import _stage
from lakelet.stages._many import ItemDone, call_many
from lakelet.stages._stage import Stage
from lakelet.storage._scopes import LAKE

__all__ = ["map_stage"]

_CHUNK_MAX = 64  # items per task: few tasks, yet progress and balance between workers
_WINDOW = 1024  # items keyed, looked up (in one query), run and loaded together

_logger = logging.getLogger("lakelet.stage")


def map_stage(
    stage: Stage, iterables: tuple[Any, ...], executor: Any, max_workers: int | None, progress: ProgressOption
) -> list[Any]:
    """See ``Stage.map``."""
    if not iterables:
        raise InvalidArgumentError(f"{stage.qualname}.map() takes at least one iterable of arguments")
    with chosen(progress, stage.qualname, unit="items") as shown:
        return _map(stage, iterables, executor, max_workers, shown)


def _map(
    stage: Stage, iterables: tuple[Any, ...], executor: Any, max_workers: int | None, progress: Progress
) -> list[Any]:
    lake = current_lake()
    items = list(zip(*iterables, strict=False))  # each item's arguments; a window makes its calls
    if items:
        warm_up(executor)  # the pool's fork server starts while the items are keyed
    progress.add_total(len(items))
    where = None if executor is None else address(stage, stage.qualname)  # refused before any runs
    keys: dict[Stage, Any] = {}  # upstream stages' keys, worked out once for the map
    out: list[Any] = []
    failures: dict[str, str] = {}
    ran = 0
    # A map of one window remembers its runs for this process's later calls (a notebook maps
    # again, or calls an item); a longer one does not, so what it holds does not grow with it
    remember = len(items) <= _WINDOW
    with contextlib.ExitStack() as stack:
        opened: list[cf.Executor] = []

        def run(todo: list[tuple[int, Call]], looked_up: dict[int, tuple[str, str]], tell: Any) -> None:
            if executor is None:
                call_many(stage, lake, todo, tell, looked_up, remember)
                return
            assert where is not None
            if not opened:  # the pool starts when the first window has items to run
                pool = stack.enter_context(open_executor(executor, max_workers, [where[0]]))
                assert pool is not None
                opened.append(pool)
            _on_pool(opened[0], where, lake, todo, looked_up, max_workers, tell)

        for start in range(0, len(items), _WINDOW):
            calls: list[Call] = [(args, {}) for args in items[start : start + _WINDOW]]
            window = _Window(stage, lake, calls, progress, remember)
            window.run(keys, run)
            ran += window.ran
            failures |= {f"{stage.qualname}[{start + i}]": error for i, error in window.failures.items()}
            if not failures:
                out.extend(window.results())
    _logger.info(
        "%s: %s items: %s ran, %s cached, %s failed",
        stage.qualname,
        f"{len(items):,}",
        f"{ran:,}",
        f"{len(items) - ran - len(failures):,}",
        f"{len(failures):,}",
    )
    if failures:
        label, text = next(iter(failures.items()))
        raise RunError(
            f"{len(failures)} of {len(items)} items of {stage.qualname}.map failed (the first, "
            f"{label}: {text.strip().splitlines()[-1]}); the others finished and are kept: "
            "map again to run only the failed ones",
            failures,
        )
    return out


class _Window:
    """Up to ``_WINDOW`` items of a map: keyed, looked up, the misses run, every result loaded.
    A window at a time, so that what a map holds beyond its results does not grow with its
    items; a key already run in an earlier window is found cached."""

    def __init__(
        self, stage: Stage, lake: Lake, calls: list[Call], progress: Progress, remember: bool
    ) -> None:
        self.stage, self.lake, self.calls, self.progress = stage, lake, calls, progress
        self.remember = remember
        self.cache = stage.options.get("cache", True)
        self.digests: list[str] = []
        self.first: dict[str, int] = {}  # one run per distinct key (a cache=False stage runs each call)
        self.sharing: Counter[str] = Counter()  # items per key: each advances the progress
        # the cached keys' values, by the index of their first item; what could not be loaded
        # (damaged since its record was found) is loaded again at the end, or run
        self.values: dict[int, Any] = {}
        self.unloaded: dict[int, str] = {}  # index -> the run record that failed to load
        self.done: dict[int, ItemDone] = {}
        self.ran = 0
        self.failures: dict[int, str] = {}

    def run(self, keys: dict[Stage, Any], run: Any) -> None:
        stage, lake, calls = self.stage, self.lake, self.calls
        self.digests = [stage.key_for(lake, args, kwargs, keys).digest for args, kwargs in calls]
        self.sharing = Counter(self.digests)
        if self.cache:
            self.first = {d: i for i, d in reversed(list(enumerate(self.digests)))}
        free = self._look_up() if self.cache else {}
        todo = [
            (i, calls[i])
            for i in (self.first.values() if self.cache else range(len(calls)))
            if i not in self.values and i not in self.unloaded
        ]
        looked_up = {i: (self.digests[i], free[self.digests[i]]) for i, _ in todo if self.digests[i] in free}
        if todo:
            run(sorted(todo), looked_up, self._tell)
        self._load_ran()
        self.ran = sum(d.status == "ran" for d in self.done.values())
        self.failures = {i: d.error for i, d in sorted(self.done.items()) if d.status == "failed"}

    def _look_up(self) -> dict[str, str]:
        """Find the cached keys and load their values; returns the run record name each missing
        key binds (its runs need not look again)."""
        stage, lake = self.stage, self.lake
        free: dict[str, str] = {}
        runs = current_runs(lake.context, stage.qualname, self.first, self.remember)
        outputs = lake.context.catalog.get_many(
            LAKE, [n for _, run in runs.values() if run is not None for n in run.returned.names[:1]]
        )
        for digest, (name, found) in runs.items():
            if found is None:
                free[digest] = name
                continue
            index = self.first[digest]
            try:
                self.values[index] = stage.load_output(lake, found, outputs, self.remember)
            except (CorruptRecordError, IntegrityError):
                self.unloaded[index] = name
            self.progress.advance(self.sharing[digest])
        return free

    def _tell(self, item: ItemDone) -> None:
        self.done[item.index] = item
        self.progress.advance(self.sharing[self.digests[item.index]] if self.cache else 1)

    def _load_ran(self) -> None:
        """The values of the items run here, and of those whose cached output could not be
        loaded (damaged since: run again now). An item that fails then is a failure of the map,
        named with the others, and the next windows still run."""
        for j in self.first.values() if self.cache else range(len(self.calls)):
            if j in self.values:
                continue
            item = self.done.get(j)
            if item is not None and item.status == "failed":
                continue
            if item is not None and item.returned:  # the run handed its value back
                self.values[j] = item.value
                continue
            args, kwargs = self.calls[j]
            try:
                record = self.unloaded[j] if item is None else item.record
                self.values[j] = _load(self.lake, self.stage, record, args, kwargs, self.remember)
            except Exception as error:
                self.done[j] = ItemDone(j, "failed", error="".join(traceback.format_exception(error)))

    def results(self) -> list[Any]:
        """Every item's result, in order (after ``run``, with no failures)."""
        return [self.values[self.first[d] if self.cache else i] for i, d in enumerate(self.digests)]


def _on_pool(
    pool: cf.Executor,
    where: tuple[str, str],
    lake: Lake,
    todo: list[tuple[int, Call]],
    looked_up: dict[int, tuple[str, str]],
    max_workers: int | None,
    tell: Any,
) -> None:
    workers = max_workers or os.cpu_count() or 1
    spec = lake_spec(lake)
    futures = {}
    start = 0
    while start < len(todo):
        # chunks shrink as the items left do (guided scheduling): a worker that ends early
        # finds small ones left rather than waiting on a peer's last 64 items
        size = max(1, min(_CHUNK_MAX, math.ceil((len(todo) - start) / (4 * workers))))
        chunk = [(i, to_wire(call)) for i, call in todo[start : start + size]]
        known = {i: looked_up[i] for i, _ in chunk if i in looked_up}
        futures[pool.submit(run_items, *where, spec, chunk, known)] = chunk
        start += size
    for future in cf.as_completed(futures):
        error = future.exception()
        if error is None:
            for item in future.result():
                tell(item)
            continue
        # the task itself failed (a worker died, the stage's module does not import there)
        text = f"{type(error).__name__}: {error}"
        for index, _ in futures[future]:
            tell(ItemDone(index, "failed", error=text))


def _load(
    lake: Lake, stage: Stage, record: str, args: tuple[Any, ...], kwargs: dict[str, Any], remember: bool
) -> Any:
    """An item's result from the run record its call bound or found; a record that cannot be
    loaded (damaged since) is passed over by a plain call, which runs the item again."""
    found = lake.context.lookup(LAKE, record)
    if found is not None and found.removed_at is None:
        try:
            run = read_run_cached(lake.context, found, remember)
            return stage.load_output(lake, run, remember=remember)
        except (CorruptRecordError, IntegrityError) as e:  # torn by a power cut, say
            ignore(lake.context, e, "the stage runs again")
    return stage.run(lake, args, kwargs)


_stage.MAPPER = map_stage
