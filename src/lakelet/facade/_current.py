"""The current lake: the one set by ``lakelet.use``, else what ``lakelet.open()`` resolves.

It is resolved at each use and memoized by resolved root, so a notebook that
changes $LAKELET_HOME or calls ``use`` gets the new lake on its next call.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from lakelet.core import _config
from lakelet.facade._lake import Lake

__all__ = ["current_lake", "use"]

_used: list[Lake] = []
_opened: dict[Path, Lake] = {}
_lock = threading.Lock()


def current_lake() -> Lake:
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
        _used.append(lake)

    def __enter__(self) -> Lake:
        return self._lake

    def __repr__(self) -> str:  # a notebook cell ending in use(lake) shows what is now current
        return f"lakelet.use({self._lake!r})"

    def _repr_html_(self) -> str:
        return self._lake._repr_html_()  # noqa: SLF001 - the protocol a notebook calls

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(ValueError):
            _used.remove(self._lake)
