"""Metadata sync: does a second ``sync`` cost the same few requests in a 10,000- and a 100,000-name lake?

Scenario, for a lake of N names (N = 100,000, then 10,000):

  1. machine A adds N tiny files as one directory (write-through: the objects in packs,
     the N name records in one log entry), timed;
  2. machine B (a second root) runs its first ``sync``: learns every name, writes no
     content; timed, remote requests counted (no snapshot yet: fewer than 1,000 entries);
  3. machine C (a third root) adds 10 new names; then B (reopened, as a new process
     would) syncs again: timed, requests counted. Steps 3 is repeated (default 3 times)
     and the median time reported; the request count must not depend on N;
  4. machine D runs its first sync after all that (for reference).

Then the bytes of ``log/``, ``snapshots/`` and ``packs/`` on the remote are reported.

Why a ``file://`` remote as well as moto: the local disk times a sync's own work (SQLite,
parsing) without moto's ~8 ms per request, and counting requests needs no server log. The
requests a sync makes go
through the same ``Remote`` code (fsspec calls) whatever the store, so they are counted
here by wrapping fsspec's LocalFileSystem methods (``ls``, ``find``, ``cat``, ``cat_file``,
``pipe_file``, ``put_file``, ``open``, ``size``, ``info``, ``exists``, ``rm_file``) and
lakelet's local write path (``Remote._local_publish``: a create, an upload or a put, each
one PUT on an object store). Only the outermost call counts (``cat`` calling ``cat_file`` is one
request per path, as s3fs would send); a listing counts one request per 1,000 entries
returned (S3's ListObjectsV2 page). Times are local-disk times, not S3 times: on S3 each
request adds its latency, which is why the count is the figure that matters.

The same first and second syncs are then run on moto S3 (bench/remote.py's server, in a
child process) with small lakes (100 and 1,000 names by default), counting the requests
the server logs: s3fs turns some calls into two requests (a whole-object ``cat_file`` is a
HEAD and a GET; listing an empty prefix lists its parent too), so the S3 counts are higher
than the file:// model, and must not depend on the lake's size either.

    .venv/bin/python bench/sync.py                      # 100,000 and 10,000 names (~5 min)
    .venv/bin/python bench/sync.py --quick              # 10,000 and 1,000 names
    .venv/bin/python bench/sync.py --sizes 20000 2000   # any sizes
    .venv/bin/python bench/sync.py --no-moto            # without the moto S3 check
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _common import load_note, machine, median, scratch, table
from fsspec.implementations.local import LocalFileSystem

import lakelet
from lakelet.core._environ import patched_environ
from lakelet.remote import _remote

NEW_NAMES = 10

# fsspec method -> the kind of request an object store would receive
_FS_METHODS = {
    "ls": "list",
    "find": "list",
    "cat": "read",
    "cat_file": "read",
    "open": "read",
    "size": "head",
    "info": "head",
    "exists": "head",
    "pipe_file": "write",
    "put_file": "write",
    "rm_file": "delete",
}
_LAKELET_WRITES = ("_local_publish",)  # Remote's one local write path: create, upload, put_bytes


class RequestCounter:
    """Counts the requests the remote would receive, while ``active``."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.active = False
        self._lock = threading.Lock()
        self._depth = threading.local()
        self._saved: list[tuple[object, str, object]] = []

    def _add(self, kind: str, n: int) -> None:
        if self.active:
            with self._lock:
                self.counts[kind] += n

    def _wrap(self, fn: Callable, kind: str, name: str) -> Callable:
        counter = self

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            depth = getattr(counter._depth, "n", 0)
            counter._depth.n = depth + 1
            result = None
            try:
                result = fn(*args, **kwargs)
                return result
            finally:  # a failed request (FileNotFoundError, FileExistsError) is a request too
                counter._depth.n = depth
                if depth == 0:  # an inner call is part of the outer request(s)
                    counter._add(kind, _requests_of(name, args, kwargs, result))

        return wrapper

    def install(self) -> None:
        for name, kind in _FS_METHODS.items():
            original = getattr(LocalFileSystem, name)
            self._saved.append((LocalFileSystem, name, LocalFileSystem.__dict__.get(name)))
            setattr(LocalFileSystem, name, self._wrap(original, kind, name))
        for name in _LAKELET_WRITES:
            original = getattr(_remote.Remote, name)
            self._saved.append((_remote.Remote, name, original))
            setattr(_remote.Remote, name, self._wrap(original, "write", name))

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._saved):
            if original is None:
                delattr(owner, name)  # it was inherited
            else:
                setattr(owner, name, original)
        self._saved.clear()

    @contextlib.contextmanager
    def measure(self) -> Iterator[collections.Counter[str]]:
        """Counts of the requests made inside the block (filled in when it ends)."""
        out: collections.Counter[str] = collections.Counter()
        self.counts.clear()
        self.active = True
        try:
            yield out
        finally:
            self.active = False
            out.update(self.counts)


def _requests_of(name: str, args: tuple, kwargs: dict, result: object) -> int:
    if name in ("ls", "find"):  # one page per 1,000 entries, at least one request
        return max(1, math.ceil(len(result) / 1000)) if isinstance(result, (list, dict)) else 1
    if name == "cat":
        path = args[1] if len(args) > 1 else kwargs.get("path")
        return len(path) if isinstance(path, list) else 1
    return 1


@dataclass
class Step:
    label: str
    seconds: list[float] = field(default_factory=list)
    requests: list[collections.Counter[str]] = field(default_factory=list)
    names: int | None = None

    def total(self, i: int = -1) -> int:
        return sum(self.requests[i].values())


@dataclass
class Result:
    steps: list[Step]
    log: tuple[int, int]  # (files, bytes) on the remote
    snapshots: tuple[int, int]
    packs: tuple[int, int]


def kinds(c: collections.Counter[str]) -> str:
    return ", ".join(f"{k} {c[k]:,}" for k in ("list", "read", "head", "write", "delete") if c[k])


def make_files(directory: Path, n: int, tag: str) -> None:
    """``n`` distinct tiny files, 1,000 per subdirectory."""
    for i in range(n):
        sub = directory / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i:06d}.txt").write_bytes(f"{tag} {i}\n".encode())


def remote_bytes(remote: Path, folder: str) -> tuple[int, int]:
    files = size = 0
    for dirpath, _dirs, names in os.walk(remote / folder):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, n))
    return files, size


def run(n: int, work: Path, counter: RequestCounter, repeats: int) -> Result:
    remote = work / f"remote-{n}"
    remote.mkdir()
    url = remote.resolve().as_uri()  # file:///…
    src = work / f"src-{n}"
    make_files(src, n, "base")
    os.sync()

    add = Step(f"A adds {n:,} names (write-through)")
    first = Step("B first sync")
    second = Step(f"B second sync (after C adds {NEW_NAMES})")
    fresh = Step("D first sync")

    def timed(step: Step, fn: Callable[[], object]) -> object:
        with counter.measure() as counts:
            t0 = time.perf_counter()
            result = fn()
            step.seconds.append(time.perf_counter() - t0)
        step.requests.append(counts)
        return result

    a = lakelet.init(work / f"a-{n}", remote=url)
    added = timed(add, lambda: a.add(src, "set"))
    assert isinstance(added, list) and len(added) == n
    a.close()

    b = lakelet.init(work / f"b-{n}", remote=url)
    report = timed(first, b.sync)
    first.names = report.new_names  # type: ignore[attr-defined]
    assert len(b.ls("set/")) == n
    b.close()

    c = lakelet.init(work / f"c-{n}", remote=url)
    for k in range(repeats):
        new = work / f"new-{n}-{k}"
        make_files(new, NEW_NAMES, f"new {k}")
        c.add(new, f"new-{k}")
        b = lakelet.open(work / f"b-{n}")  # a new process: nothing cached in memory
        report = timed(second, b.sync)
        assert report.new_names == NEW_NAMES, report  # type: ignore[attr-defined]
        assert len(b.ls(f"new-{k}/")) == NEW_NAMES
        b.close()
    second.names = NEW_NAMES
    c.close()

    d = lakelet.init(work / f"d-{n}", remote=url)
    report = timed(fresh, d.sync)
    fresh.names = report.new_names  # type: ignore[attr-defined]
    assert len(d.ls("set/")) == n
    d.close()

    return Result(
        [add, first, second, fresh],
        remote_bytes(remote, "log"),
        remote_bytes(remote, "snapshots"),
        remote_bytes(remote, "packs"),
    )


@dataclass
class MotoResult:
    names: int
    first: int  # requests the server logged
    second: int
    second_s: float


def run_moto(sizes: list[int]) -> list[MotoResult]:
    """First and second sync on moto S3, requests counted from the server's log."""
    from remote import BUCKET, MotoServer

    out = []
    with scratch("sync-moto") as work:
        server = MotoServer(work)
        try:
            with patched_environ(server.env):
                for n in sizes:
                    url = f"s3://{BUCKET}/sync-{n}-{os.getpid()}"
                    make_files(work / f"src-{n}", n, "base")
                    lakelet.init(work / f"a-{n}", remote=url).add(work / f"src-{n}", "set")
                    b = lakelet.init(work / f"b-{n}", remote=url)
                    mark = server.mark()
                    b.sync()
                    first = server.since(mark)[0]
                    b.close()
                    make_files(work / f"new-{n}", NEW_NAMES, "new")
                    lakelet.init(work / f"c-{n}", remote=url).add(work / f"new-{n}", "new")
                    b = lakelet.open(work / f"b-{n}")
                    mark = server.mark()
                    t0 = time.perf_counter()
                    report = b.sync()
                    seconds = time.perf_counter() - t0
                    assert report.new_names == NEW_NAMES, report
                    out.append(MotoResult(n, first, server.since(mark)[0], seconds))
                    b.close()
        finally:
            server.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10,000 and 1,000 names")
    ap.add_argument("--sizes", type=int, nargs="+", help="lake sizes (default 100000 10000)")
    ap.add_argument("--repeats", type=int, default=3, help="second syncs per size (default 3)")
    ap.add_argument(
        "--moto-sizes",
        type=int,
        nargs="+",
        default=[100, 1000],
        help="lake sizes of the moto S3 check (default 100 1000)",
    )
    ap.add_argument("--no-moto", action="store_true", help="skip the moto S3 check")
    args = ap.parse_args()
    sizes = args.sizes or ([10_000, 1_000] if args.quick else [100_000, 10_000])

    print(f"# sync: requests and time of a lake's syncs, lakes of {', '.join(f'{n:,}' for n in sizes)} names")
    print(f"# {machine()}")
    print(f"# {load_note()}")
    print("# remote: file:// in bench/.work; requests counted as an object store would receive them")

    counter = RequestCounter()
    counter.install()
    results: dict[int, Result] = {}
    try:
        with scratch("sync") as work:
            for n in sizes:
                print(f"  lake of {n:,} names...", flush=True)
                results[n] = run(n, work, counter, args.repeats)
    finally:
        counter.uninstall()
    moto = [] if args.no_moto else run_moto(args.moto_sizes)

    rows = []
    for n, res in results.items():
        for step in res.steps:
            totals = [sum(c.values()) for c in step.requests]
            spread = "" if len(set(totals)) == 1 else f" ({min(totals)}-{max(totals)})"
            rows.append(
                (
                    f"{n:,}",
                    step.label,
                    f"{median(step.seconds):.3f}",
                    f"{median(totals):,.0f}{spread}",
                    kinds(step.requests[-1]),
                    f"{step.names:,}" if step.names is not None else "",
                )
            )
    print()
    print(table(["lake names", "step", "median s", "requests", "by kind (last run)", "names learned"], rows))

    print()
    print(
        table(
            [
                "lake names",
                "log files",
                "log bytes",
                "snapshot files",
                "snapshot bytes (gzip)",
                "log + snapshot bytes/name",
                "packs",
                "pack bytes",
            ],
            [
                (
                    f"{n:,}",
                    f"{r.log[0]:,}",
                    f"{r.log[1]:,}",
                    f"{r.snapshots[0]:,}",
                    f"{r.snapshots[1]:,}",
                    f"{(r.log[1] + r.snapshots[1]) / n:.0f}",
                    f"{r.packs[0]:,}",
                    f"{r.packs[1]:,}",
                )
                for n, r in results.items()
            ],
        )
    )

    if moto:
        print("\nOn moto S3, requests as the server logged them:")
        print(
            table(
                [
                    "lake names",
                    "B first sync requests",
                    f"B second sync requests (after C adds {NEW_NAMES})",
                    "second sync s",
                ],
                [(f"{m.names:,}", m.first, m.second, f"{m.second_s:.3f}") for m in moto],
            )
        )

    second = {n: r.steps[2] for n, r in results.items()}
    counts = {n: {sum(c.values()) for c in step.requests} for n, step in second.items()}
    every = set().union(*counts.values())
    print("\nTargets:")
    print(
        f"- {'PASS' if len(every) == 1 else 'MISS'} second-sync requests independent of lake size: "
        + "; ".join(f"{n:,} names -> {sorted(c)}" for n, c in counts.items())
    )
    if moto:
        same = len({m.second for m in moto}) == 1
        print(
            f"- {'PASS' if same else 'MISS'} the same on moto S3 (server-logged requests): "
            + "; ".join(f"{m.names:,} names -> {m.second}" for m in moto)
        )
    biggest, smallest = max(sizes), min(sizes)
    print(
        f"  second-sync time: {median(second[biggest].seconds) * 1000:.0f} ms at {biggest:,} names vs "
        f"{median(second[smallest].seconds) * 1000:.0f} ms at {smallest:,} (local disk; "
        "on S3 add ~one round trip per request)"
    )


if __name__ == "__main__":
    main()
