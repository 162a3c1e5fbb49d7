"""The current lake: the one a task runs in (``running_in``), else the one set by
``lakelet.use``, else what ``lakelet.open()`` resolves.

It is resolved at each use and memoized by resolved root, so a notebook that
changes $LAKELET_HOME or calls ``use`` gets the new lake on its next call. ``use`` sets the
lake for the thread (or asyncio task) that calls it, and for the process's other threads unless
they set their own; ``running_in`` for the running task alone. So two threads that each map a
stage over their own lake (``with lakelet.use(lake): stage.map(...)``), and the pool threads or
Dask worker threads that run their items, each see their own lake.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from lakelet.core import _config
from lakelet.facade._lake import Lake

__all__ = ["current_lake", "running_in", "use"]

_used: list[Lake] = []
_opened: dict[Path, Lake] = {}
_lock = threading.Lock()
_task_lake: ContextVar[Lake | None] = ContextVar("lakelet_task_lake", default=None)


def current_lake() -> Lake:
    task = _task_lake.get()
    if task is not None:
        return task
    if _used:
        return _used[-1]
    root = _config.find_root().resolve()
    with _lock:
        lake = _opened.get(root)
        if lake is None:
            lake = _opened[root] = Lake(_config.load(root))
        return lake


class use(contextlib.AbstractContextManager["Lake"]):  # noqa: N801 - reads as a function
    """Make ``lake`` the current lake: for a ``with`` block, or from now on if called alone."""

    def __init__(self, lake: Lake) -> None:
        if not isinstance(lake, Lake):
            raise TypeError(f"use() takes a Lake, not {type(lake).__name__}")
        self._lake = lake
        _used.append(lake)  # the process's, for the threads that do not set their own
        self._token = _task_lake.set(lake)  # this thread's, whatever other threads use meanwhile

    def __enter__(self) -> Lake:
        return self._lake

    def __repr__(self) -> str:  # a notebook cell ending in use(lake) shows what is now current
        return f"lakelet.use({self._lake!r})"

    def _repr_html_(self) -> str:
        return self._lake._repr_html_()  # noqa: SLF001 - the protocol a notebook calls

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ValueError):  # left in another context than it was entered in
            _task_lake.reset(self._token)
        with contextlib.suppress(ValueError):
            _used.remove(self._lake)


@contextlib.contextmanager
def running_in(lake: Lake) -> Iterator[Lake]:
    """Make ``lake`` current for the task running here (this thread or asyncio task) only:
    what a worker does while it runs a stage of a map over ``lake``."""
    token = _task_lake.set(lake)
    try:
        yield lake
    finally:
        _task_lake.reset(token)
