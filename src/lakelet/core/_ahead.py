"""Making the next item while the caller works on this one, in a worker thread.

A first sync reads and checks a snapshot's next piece (pyarrow: decoding and column checks
release the GIL) while SQLite loads the previous one (sqlite3 releases it in each step): on two
cores, the two halves take the time of the longer rather than their sum.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["read_ahead"]

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterable[T]) -> Iterator[T]:
    """``items``, made one ahead in a worker thread: the worker makes the next item while the
    caller holds one, never more (memory holds two). An exception from ``items`` is raised
    here, where the caller would have met it; closing this iterator early stops the worker
    (at its next item) and closes ``items`` in it."""
    turns = threading.Semaphore(2)  # the item the caller holds, and the one made meanwhile
    made: queue.Queue[tuple[object, BaseException | None]] = queue.Queue()
    stop = threading.Event()

    def work() -> None:
        source = iter(items)
        try:
            while turns.acquire() and not stop.is_set():
                try:
                    made.put((next(source), None))
                except StopIteration:
                    made.put((_END, None))
                    return
                except BaseException as e:  # noqa: BLE001  # the caller's to meet, in its thread
                    made.put((_END, e))
                    return
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="lakelet-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            item, error = made.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item  # type: ignore[misc]  # (not _END: an item of ``items``)
            turns.release()  # the caller is done with it
    finally:
        stop.set()
        turns.release()  # a worker waiting for its turn wakes, sees stop
        worker.join()
