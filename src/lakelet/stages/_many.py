"""Many calls of one stage in one process, bound in group commits: what ``Stage.map`` does in
process and in each worker.

Each call is keyed as ``stage(*args)`` is. A cached one is reported, not loaded (the caller
loads the results it needs). The others run one after another, and every ``_BATCH`` runs (or
``_BATCH_S`` seconds) they are prepared (values encoded, run records made) and their outputs and
run records bound in one segment (``_commit.commit``), not one per call. A call that raises is
reported with its traceback; the others go on. A process killed mid-batch loses the runs not yet
committed, never binds half of one.

Unlike a single call, a batch takes no per-key lock: two processes mapping the same new item at
once both run it, and the second to bind finds the first's names (the same bytes: a no-op; other
bytes: it adopts the first's outputs, as two machines do).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lakelet.lake._run_lookup import current_run
from lakelet.stages._commit import Computed, Ran, commit
from lakelet.stages._loaded import exact

if TYPE_CHECKING:
    from lakelet.facade._lake import Lake
    from lakelet.stages._key import Key
    from lakelet.stages._stage import Stage

__all__ = ["ItemDone", "call_many"]

_BATCH = 64  # runs per group commit
_BATCH_S = 0.5  # and at most this long between commits: a slow stage still shows progress

Call = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class ItemDone:
    """What one call of a batch did: ``record`` names the run record holding its result."""

    index: int  # in the calls given
    status: Literal["ran", "skipped", "failed"]
    key: str = ""
    record: str = ""
    error: str = ""  # a failure's traceback text
    # the run's return value, when its format reads it back exactly (``_loaded.exact``): what
    # loading it from the lake would give, without a reader reading the record and object again
    value: Any = None
    returned: bool = False


def call_many(
    stage: Stage,
    lake: Lake,
    calls: list[tuple[int, Call]],
    on_done: Callable[[ItemDone], None] = lambda done: None,
    looked_up: dict[int, tuple[str, str]] | None = None,
    remember: bool = True,
) -> list[ItemDone]:
    """Run the calls ``(index, (args, kwargs))`` of ``stage`` that miss; ``on_done`` is told of
    each as it is committed (or found cached, or failed). ``looked_up``: by index, (key, the
    run record name it binds) of calls the caller found missing moments ago (``Stage.map`` looks
    every key up before it runs any), which are run without looking their key up again.
    ``remember``: keep what was bound for this process's later calls (``_commit.commit``); a
    pool's worker, whose calls the parent makes, need not."""
    cache = stage.options.get("cache", True)
    keys: dict[Stage, Key] = {}  # upstream keys, worked out once for the batch
    results: list[ItemDone] = []
    ran: list[tuple[int, Ran]] = []  # since the last group commit
    provenance: dict[str, Any] = {}  # the runs of one group commit share it (``Stage.prepare``)
    since = time.monotonic()

    def tell(done: ItemDone) -> None:
        results.append(done)
        on_done(done)

    def flush() -> None:
        nonlocal since
        since = time.monotonic()
        provenance.clear()  # each group commit asks git and the user afresh: a map may be long
        pending: list[tuple[int, Computed]] = []
        try:
            for index, run in ran:  # prepared together: see ``Stage.prepare``
                try:
                    pending.append((index, stage.prepare(lake, run, provenance)))
                except Exception as error:
                    run.discard()
                    tell(ItemDone(index, "failed", error="".join(traceback.format_exception(error))))
            ran.clear()
            if not pending:
                return
            try:
                commit(lake, [done for _, done in pending], remember)
            except Exception as error:  # the batch's bind failed: each of its runs failed
                text = "".join(traceback.format_exception(error))
                for index, done in pending:
                    tell(ItemDone(index, "failed", done.record.get("key", ""), error=text))
            else:
                for index, done in pending:
                    # a run whose result is another's hands back nothing: it is loaded from the lake
                    kept = not done.result_is_theirs and exact(done.record["returned"]["kind"], done.value)
                    value = done.value if kept else None
                    tell(
                        ItemDone(
                            index, "ran", done.record["key"], done.record_name, value=value, returned=kept
                        )
                    )
        finally:  # bound or not, interrupted or not, a prepared run's temp files go
            for _, done in pending:
                done.discard()

    def keyed(group: list[tuple[int, Call]]) -> list[tuple[int, Key, str, Call]]:
        """The calls of ``group`` to run, each with its key and run record name."""
        todo: list[tuple[int, Key, str, Call]] = []
        for index, (args, kwargs) in group:
            try:
                key = stage.key_for(lake, args, kwargs, keys)
                known = (looked_up or {}).get(index)
                if cache and known is not None and known[0] == key.digest:
                    # A run bound since by another process is found when this one binds: it then
                    # adopts that run's result (``_commit.commit``), as two machines do. A lookup
                    # per item cost a tenth of a mapped item's overhead, for a race that rare.
                    name = known[1]
                elif cache:
                    name, found = current_run(lake.context, stage.qualname, key.digest)
                    if found is not None:
                        tell(ItemDone(index, "skipped", key.digest, name))
                        continue
                else:  # each call its own generation, distinct from those not bound yet
                    taken = {r.record_name for _, r in ran} | {t[2] for t in todo}
                    name = stage.free_generation(lake, key.digest, taken)
                todo.append((index, key, name, (args, kwargs)))
            except Exception as error:  # the others go on; the caller reports it
                tell(ItemDone(index, "failed", error="".join(traceback.format_exception(error))))
        return todo

    try:
        # a group keyed, then run: each pass keeps its code and data in the CPU's caches; a
        # group at a time, so that what a map holds does not grow with its items
        for start in range(0, len(calls), _BATCH):
            for index, key, name, (args, kwargs) in keyed(calls[start : start + _BATCH]):
                try:
                    ran.append((index, stage.call_body(lake, key, name, args, kwargs)))
                except Exception as error:
                    tell(ItemDone(index, "failed", error="".join(traceback.format_exception(error))))
                if len(ran) >= _BATCH or time.monotonic() - since >= _BATCH_S:
                    flush()
        flush()
    finally:
        for _, run in ran:  # a KeyboardInterrupt, say: what the runs wrote goes
            run.discard()
    return results
