"""Shared helpers for the bench/ scripts: medians, tables, scratch dirs, /proc/self/io."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
WORK = BENCH_DIR / ".work"

MB = 1_000_000  # throughputs are decimal: MB/s = 10^6 bytes/s, GB/s = 10^9 bytes/s
MiB = 1 << 20
GiB = 1 << 30


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for k, r in enumerate(cells):
        pairs = enumerate(zip(r, widths, strict=True))
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        lines.append("| " + " | ".join(padded) + " |")
        if k == 0:  # first column left-aligned, the numbers right-aligned
            rules = ["-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)]
            lines.append("|" + "|".join(rules) + "|")
    return "\n".join(lines)


def proc_io() -> dict[str, int]:
    """This process's I/O counters (rchar/wchar: bytes through read/write syscalls,
    read_bytes/write_bytes: bytes that went to the block layer)."""
    out = {}
    with open("/proc/self/io") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k.strip()] = int(v)
    return out


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    python = f"Python {platform.python_version()}"
    return f"{platform.node()} | {os.cpu_count()} cpus ({cpu}) | {python} | {platform.platform()}"


@contextlib.contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A fresh directory under bench/.work/, removed afterwards (also on error)."""
    path = WORK / f"{name}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(OSError):
            WORK.rmdir()


def write_random_file(path: Path, size: int, chunk: int = 64 * MiB) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def du_bytes(path: Path) -> tuple[int, int]:
    """(file count, allocated bytes) of every regular file under ``path``."""
    files = blocks = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            files += 1
            blocks += st.st_blocks * 512
    return files, blocks
