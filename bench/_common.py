"""Shared helpers for the bench/ scripts: medians, tables, scratch dirs, /proc/self/io."""

from __future__ import annotations

import compileall
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


def compile_lakelet() -> None:
    """Compile lakelet's modules to bytecode (``__pycache__``, ignored by git), as installing
    its wheel does: a checkout installed in editable mode where PYTHONDONTWRITEBYTECODE is set
    (these machines) compiles every module again in every fresh process (~60 ms of the ~180 ms
    a fork server takes to import lakelet), which the peer tools, installed from wheels, never
    pay. ``compileall`` writes the files whatever PYTHONDONTWRITEBYTECODE says."""
    compileall.compile_dir(REPO / "src" / "lakelet", quiet=1)


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM), in MiB. Not ``ru_maxrss``: Linux keeps that
    across ``exec``, so a child started by a bench process that holds 60 MB reported at least
    60 MB whatever it used."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


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
def scratch(name: str, root: Path = WORK) -> Iterator[Path]:
    """A fresh directory under ``root`` (default bench/.work/), removed afterwards (also on error)."""
    path = root / f"{name}-{os.getpid()}"
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


def load_note() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every timing."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cpus"


def fs_type(path: Path) -> str:
    """The type of the filesystem holding ``path`` (ext4, xfs, btrfs…), from /proc/self/mountinfo."""
    target = os.path.realpath(path)
    best, kind = "", "?"
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mount_point = left.split()[4]
            inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, kind = mount_point, right.split()[0]
    return kind


class OtherLoad:
    """CPU time other processes used while a benchmark ran: a timing is only as good as the idle
    machine under it. Busy time comes from /proc/stat, this process's (and its reaped
    children's) from os.times()."""

    def __init__(self) -> None:
        self._start = (self._busy(), self._own(), time.perf_counter())

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def note(self) -> str:
        busy0, own0, wall0 = self._start
        wall = time.perf_counter() - wall0
        other = max(0.0, (self._busy() - busy0) - (self._own() - own0))
        share = other / (wall * (os.cpu_count() or 1))
        return (
            f"other processes used {other:.1f} CPU-s during the {wall:.0f} s run "
            f"({share:.0%} of the machine; near 0% means the timings are clean)"
        )
