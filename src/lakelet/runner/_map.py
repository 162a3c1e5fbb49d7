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
import logging
import math
import os
from collections import Counter
from typing import Any

from lakelet.core._progress import Progress
from lakelet.core.errors import CorruptRecordError, IntegrityError, InvalidArgumentError, RunError
from lakelet.facade._current import current_lake
from lakelet.facade._lake import Lake
from lakelet.facade._progress_bar import ProgressOption, chosen
from lakelet.lake._run_record import RunRecord, ignore, read_run_cached
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
    calls: list[Call] = [(tuple(item), {}) for item in zip(*iterables, strict=False)]
    if calls:
        warm_up(executor)  # the pool's fork server starts while the items are keyed
    progress.add_total(len(calls))
    cache = stage.options.get("cache", True)
    keys: dict[Stage, Any] = {}
    digests = [stage.key_for(lake, args, kwargs, keys).digest for args, kwargs in calls]
    # one run per distinct key (a cache=False stage runs every call), found cached here or run
    first = {d: i for i, d in reversed(list(enumerate(digests)))} if cache else {}
    hits: dict[str, tuple[str, RunRecord]] = {}
    free: dict[str, str] = {}  # a missing key's run record name: the runs need not look again
    for digest in first:
        name, found = stage.current_run(lake, digest)
        if found is not None:
            hits[digest] = (name, found)
        else:
            free[digest] = name
    todo = [(i, calls[i]) for i in (first.values() if cache else range(len(calls))) if digests[i] not in hits]
    looked_up = {i: (digests[i], free[digests[i]]) for i, _ in todo if digests[i] in free}
    sharing = Counter(digests)  # items per key: each advances the progress
    where = None if executor is None else address(stage, stage.qualname)  # refused before any runs
    done: dict[int, ItemDone] = {}

    def tell(item: ItemDone) -> None:
        done[item.index] = item
        progress.advance(sharing[digests[item.index]] if cache else 1)

    for digest, (name, _) in hits.items():
        tell(ItemDone(first[digest], "skipped", digest, name))

    if executor is None:
        call_many(stage, lake, sorted(todo), tell, looked_up)
    elif todo:
        assert where is not None
        with open_executor(executor, max_workers, [where[0]]) as pool:
            assert pool is not None
            _on_pool(pool, where, lake, todo, looked_up, max_workers, tell)
    failures = {f"{stage.qualname}[{i}]": d.error for i, d in sorted(done.items()) if d.status == "failed"}
    ran = sum(d.status == "ran" for d in done.values())
    _logger.info(
        "%s: %s items: %s ran, %s cached, %s failed",
        stage.qualname,
        f"{len(calls):,}",
        f"{ran:,}",
        f"{len(calls) - ran - len(failures):,}",
        f"{len(failures):,}",
    )
    if failures:
        label, text = next(iter(failures.items()))
        raise RunError(
            f"{len(failures)} of {len(calls)} items of {stage.qualname}.map failed (the first, "
            f"{label}: {text.strip().splitlines()[-1]}); the others finished and are kept: "
            "map again to run only the failed ones",
            failures,
        )
    by_index = {i: done[first[d] if cache else i] for i, d in enumerate(digests)}
    loaded: dict[str, Any] = {}
    out = []
    for i, (args, kwargs) in enumerate(calls):
        item = by_index[i]
        if item.returned:  # the run handed its value back: no need to load it
            out.append(item.value)
            continue
        record = item.record
        if record not in loaded:
            hit = hits.get(digests[i])
            loaded[record] = _load(lake, stage, record, args, kwargs, hit[1] if hit else None)
        out.append(loaded[record])
    return out


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
    lake: Lake,
    stage: Stage,
    record: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    run: RunRecord | None,
) -> Any:
    """An item's result from the run record its call bound or found (``run``, when read already);
    a record that cannot be loaded (damaged since) is passed over by a plain call, which runs
    the item again."""
    found = lake.context.lookup(LAKE, record) if run is None else None
    if run is not None or (found is not None and found.removed_at is None):
        try:
            if run is None:
                assert found is not None
                run = read_run_cached(lake.context, found)
            return stage.load_output(lake, run)
        except (CorruptRecordError, IntegrityError) as e:  # torn by a power cut, say
            ignore(lake.context, e, "the stage runs again")
    return stage.run(lake, args, kwargs)


_stage.MAPPER = map_stage
