"""How many records an operation holds in memory at once: the knob of every streaming path.

Sync, push, listings, gc, fsck and index rebuilds work through a lake in batches of this
many records, so their peak memory depends on it, not on the number of names. The
environment variable ``LAKELET_BATCH`` sets it (tests lower it to see the batches taken).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["DEFAULT_BATCH", "batch_size", "batched"]

DEFAULT_BATCH = 50_000  # ~50 MB of records in Python: small beside 1 GiB, large beside a request
_T = TypeVar("_T")


def batch_size() -> int:
    """``LAKELET_BATCH`` if it is a positive integer, else DEFAULT_BATCH (read on each call)."""
    value = os.environ.get("LAKELET_BATCH", "")
    return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else DEFAULT_BATCH


def batched(items: Iterable[_T], size: int | None = None) -> Iterator[list[_T]]:
    """``items`` in lists of ``size`` (default ``batch_size()``), the last one shorter."""
    size = size or batch_size()
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk
