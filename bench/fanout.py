"""Fanning a stage out: lakelet against joblib.Memory, joblib.Parallel and dask on the same items.

Each case runs in a fresh process with a fresh lake / cache directory under bench/.work:

(a) trivial calls: a stage returning i*i, called for i in range(N) (10,000; 1,000 with
    --quick): first run and cached, per call (ms), as a loop of direct calls and as one
    in-process ``stage.map``; joblib.Memory's ``cache(f)`` called the same way; "cached, new
    process": the cached calls again in a process of their own (a pipeline run again), which
    has not remembered the runs it made. Peak RSS (VmHWM: ``_common.peak_rss_mib``) of each
    case's process at 1,000 and at N items.
(b) the first stage call in a fresh process: ``import lakelet`` done, then the time of the first
    call of a trivial stage in a new lake, against the plain call (median of 5 processes).
(c) CPU map: 1,000 items (200 with --quick) of ~10 ms CPU each (the loop count calibrated once
    and passed to every tool), on 2 workers: a serial loop of the plain function;
    ``stage.map(executor="processes", max_workers=2)`` in a fresh lake; joblib.Parallel(n_jobs=2)
    (loky); a dask LocalCluster of 2 single-threaded worker processes (``client.map`` +
    ``gather``, no cache; cluster start-up not timed). Pool start-up is timed for lakelet and
    joblib (each makes its pool in the call).

Targets (issue #18): first run <= 2 ms per call; cached <= 0.1 ms per call; the first call in a
fresh process <= 20 ms over the plain call; the CPU map >= 1.8x serial and within 1.1x of
joblib.Parallel; peak memory flat in the number of items.

    .venv/bin/python bench/fanout.py [--quick]
    .venv/bin/python bench/fanout.py --child cpu - ITEMS ROUNDS   # (c) alone, tools alternating
    .venv/bin/python bench/fanout.py --child map-overhead DIR ITEMS 0  # a map's own CPU per item

``map-overhead`` times an in-process map of ITEMS items that do ~no work (``time.process_time``,
after 100 items to warm up): what lakelet adds to each item of (c), whatever the load.

lakelet's modules are compiled to bytecode first (``_common.compile_lakelet``), as a wheel's are
when it is installed: the peer tools are.

(c) also reports the CPU seconds of every process a case started (the fork server and its
workers, loky's): on a loaded machine the wall time of a pool says little (Linux shares the CPU
between sessions, so two workers get no more than a serial loop), its CPU still says what the
work and lakelet's overhead cost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from _common import compile_lakelet, load_note, machine, median, peak_rss_mib, scratch, table

BENCH = Path(__file__).resolve().parent


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def child(case: str, work: Path, n: int, burn_n: int) -> dict:
    sys.path.insert(0, str(BENCH))
    import _fanout_work as w

    out: dict = {}
    tool, _, again = case.partition("+")  # "+again": the cached calls alone, in a new process
    phases = ("cached",) if again else ("first", "cached")
    if tool in ("lakelet-loop", "lakelet-map"):
        import lakelet

        lakelet.use(lakelet.open(work / "lake") if again else lakelet.init(work / "lake"))
        stage = w.trivial_stage
        for phase in phases:
            t0 = time.perf_counter()
            values = stage.map(range(n)) if tool == "lakelet-map" else [stage(i) for i in range(n)]
            out[phase] = (time.perf_counter() - t0) / n * 1000
            assert values[-1] == (n - 1) ** 2
        out["peak_mb"] = peak_rss_mib()
    elif tool == "joblib-memory":
        import joblib

        f = joblib.Memory(work / "joblib", verbose=0).cache(w.trivial)
        for phase in phases:
            t0 = time.perf_counter()
            values = [f(i) for i in range(n)]
            out[phase] = (time.perf_counter() - t0) / n * 1000
            assert values[-1] == (n - 1) ** 2
        out["peak_mb"] = peak_rss_mib()
    if tool in ("lakelet-loop", "lakelet-map", "joblib-memory"):
        if not again:  # what a cached call costs in a process that did not make the results
            proc = subprocess.run(
                [sys.executable, __file__, "--child", f"{case}+again", str(work), str(n), "0"],
                capture_output=True,
                text=True,
                check=True,
            )
            out["cached_new_process"] = json.loads(proc.stdout.strip().splitlines()[-1])["cached"]
        return out
    if case == "first-call":
        import lakelet

        lakelet.use(lakelet.init(work / "lake"))
        t0 = time.perf_counter()
        w.trivial(3)
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        w.trivial_stage(3)
        out["over_ms"] = (time.perf_counter() - t0 - plain) * 1000
    elif case == "map-overhead":
        # what a map costs per item beyond the stage's work: an in-process map (the parent's
        # keying and lookups, and what a worker does: run, record, group commit) of items that
        # do ~no work, CPU seconds of this process only
        import lakelet

        lakelet.use(lakelet.init(work / "lake"))
        w.burn_stage.map(range(-100, 0), [1] * 100)  # warm: imports, first git status, first segment
        t0 = time.process_time()
        w.burn_stage.map(range(n), [1] * n)
        out["ms_per_item"] = (time.process_time() - t0) / n * 1000
    elif case == "cpu-serial":
        t0 = time.perf_counter()
        [w.burn(i, burn_n) for i in range(n)]
        out["s"] = time.perf_counter() - t0
    elif case == "cpu-lakelet":
        import lakelet

        lakelet.use(lakelet.init(work / "lake"))
        t0 = time.perf_counter()
        w.burn_stage.map(range(n), [burn_n] * n, executor="processes", max_workers=2)
        out["s"] = time.perf_counter() - t0
    elif case == "cpu-joblib":
        from joblib import Parallel, delayed

        t0 = time.perf_counter()
        Parallel(n_jobs=2)(delayed(w.burn)(i, burn_n) for i in range(n))
        out["s"] = time.perf_counter() - t0
    elif case == "cpu-dask":
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            client.run(sys.path.insert, 0, str(BENCH))
            t0 = time.perf_counter()
            client.gather(client.map(w.burn, range(n), [burn_n] * n, pure=False))
            out["s"] = time.perf_counter() - t0
    return out


def _adopt_orphans() -> None:
    """Become the parent of our children's orphans (a fork server and its workers, loky's
    workers), so that waiting for them counts their CPU in RUSAGE_CHILDREN (Linux only)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _reap() -> None:
    """Wait for every orphan adopted: they exit when the child that made them has."""
    with contextlib.suppress(ChildProcessError):
        while True:
            os.wait()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# Every case's lake or cache directory is kept until the whole run ends: ext4 allocates no inode
# freed in the last 60-300 s (its recently_deleted check) and scans past each one, so a lake
# deleted just before the next case made that case's file creations pay kernel time for the
# files of the one before (up to 0.5 ms an item of the CPU map here, for lakelet only: the other
# tools create no files)
_kept: list[Path] = []


def run_child(case: str, n: int, burn_n: int = 0) -> dict:
    """The child's figures, and ``cpu_s``: the CPU of the child and every process it started."""
    cpu0 = _children_cpu()
    assert _kept, "run inside _keeping()"
    work = _kept[0] / f"{case}-{len(_kept)}"
    _kept.append(work)
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", case, str(work), str(n), str(burn_n)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent / "src"), str(BENCH)])},
    )
    _reap()
    if proc.returncode != 0:
        raise SystemExit(f"{case} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"cpu_s": _children_cpu() - cpu0}


@contextlib.contextmanager
def _keeping() -> Iterator[None]:
    """One scratch directory for all the cases of this run, removed at its end."""
    with scratch("fanout") as root:
        _kept[:] = [root]
        try:
            yield
        finally:
            _kept.clear()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        case, work, n, burn_n = args.child
        if case == "cpu":  # only the CPU map, each tool in turn: fanout.py --child cpu - ITEMS ROUNDS
            compile_lakelet()
            with _keeping():
                _cpu_rounds(int(n), int(burn_n))
            return
        print(json.dumps(child(case, Path(work), int(n), int(burn_n))))
        return
    with _keeping():
        _all(args.quick)


def _all(quick: bool) -> None:
    _adopt_orphans()
    compile_lakelet()
    n = 1_000 if quick else 10_000
    cpu_items = 200 if quick else 1_000
    joblib = _have("joblib")
    dask = _have("distributed")
    print(f"# fanout: {n:,} trivial calls; a {cpu_items:,}-item CPU map of ~10 ms items on 2 workers")
    print(f"# {machine()}")
    print(f"# {load_note()}")
    if not joblib:
        print("# joblib is not installed: its rows are skipped (pip install joblib)")
    if not dask:
        print("# dask.distributed is not installed: its row is skipped")

    rows = []
    for case in ("lakelet-loop", "lakelet-map", *(["joblib-memory"] if joblib else [])):
        r = run_child(case, n)
        small = r if n == 1_000 else run_child(case, 1_000)  # is the peak flat in the calls?
        rows.append(
            [
                case,
                f"{r['first']:.3f}",
                f"{r['cached']:.3f}",
                f"{r['cached_new_process']:.3f}",
                f"{small['peak_mb']:.0f}",
                f"{r['peak_mb']:.0f}",
            ]
        )
    print(f"\n(a) {n:,} trivial calls, ms per call")
    header = ["case", "first run", "cached", "cached, new process", "peak RSS MB (1,000)", f"({n:,})"]
    print(table(header, rows))

    over = [run_child("first-call", 1)["over_ms"] for _ in range(5)]
    print(
        f"\n(b) first stage call in a fresh process, over the plain call: median {median(over):.1f} ms "
        f"({', '.join(f'{x:.1f}' for x in over)})"
    )

    sys.path.insert(0, str(BENCH))
    import _fanout_work as w

    burn_n = w.calibrate()
    cases = [
        "cpu-serial",
        "cpu-lakelet",
        *(["cpu-joblib"] if joblib else []),
        *(["cpu-dask"] if dask else []),
    ]
    print(f"\n(c) {cpu_items:,} items of ~10 ms CPU on 2 workers")
    _cpu_table(cases, [{c: run_child(c, cpu_items, burn_n) for c in cases}])


def _cpu_table(cases: list[str], rounds: list[dict[str, dict]]) -> None:
    """Medians over rounds: wall seconds, speed-up over the serial loop, and the CPU seconds of
    every process (what the work and its overhead cost, whatever else the machine runs)."""
    wall = {c: median([r[c]["s"] for r in rounds]) for c in cases}
    cpu = {c: median([r[c]["cpu_s"] for r in rounds]) for c in cases}
    serial = wall["cpu-serial"]
    rows = [[c, f"{wall[c]:.2f}", f"{serial / wall[c]:.2f}x", f"{cpu[c]:.2f}"] for c in cases]
    print(table(["case", "seconds", "speed-up over serial", "CPU s (all processes)"], rows))
    if "cpu-joblib" in wall:
        print(
            f"lakelet / joblib.Parallel: {wall['cpu-lakelet'] / wall['cpu-joblib']:.2f}x the time, "
            f"{cpu['cpu-lakelet'] / cpu['cpu-joblib']:.2f}x the CPU"
        )


def _cpu_rounds(items: int, rounds: int) -> None:
    """The CPU map alone, the tools alternating, ``rounds`` times."""
    sys.path.insert(0, str(BENCH))
    import _fanout_work as w

    _adopt_orphans()
    burn_n = w.calibrate()
    cases = ["cpu-serial", "cpu-lakelet", *(["cpu-joblib"] if _have("joblib") else [])]
    print(f"# {items:,} items of ~10 ms CPU on 2 workers, {rounds} rounds; {load_note()}")
    results = [{c: run_child(c, items, burn_n) for c in cases} for _ in range(rounds)]
    for c in cases:
        print(f"# {c}: " + ", ".join(f"{r[c]['s']:.2f} s / {r[c]['cpu_s']:.2f} CPU-s" for r in results))
    _cpu_table(cases, results)
    print(f"# {load_note()}")


if __name__ == "__main__":
    main()
