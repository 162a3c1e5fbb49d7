"""Fanning a stage out: lakelet against joblib.Memory, joblib.Parallel and dask on the same items.

Each case runs in a fresh process with a fresh lake / cache directory under bench/.work:

(a) trivial calls: a stage returning i*i, called for i in range(N) (10,000; 1,000 with
    --quick): first run and cached, per call (ms), as a loop of direct calls and as one
    in-process ``stage.map``; joblib.Memory's ``cache(f)`` called the same way. Peak RSS
    (ru_maxrss) of the map run at 1,000 and at N items.
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
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import load_note, machine, median, scratch, table

BENCH = Path(__file__).resolve().parent


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(case: str, work: Path, n: int, burn_n: int) -> dict:
    sys.path.insert(0, str(BENCH))
    import _fanout_work as w

    out: dict = {}
    if case in ("lakelet-loop", "lakelet-map"):
        import lakelet

        lakelet.use(lakelet.init(work / "lake"))
        stage = w.trivial_stage
        for phase in ("first", "cached"):
            t0 = time.perf_counter()
            values = stage.map(range(n)) if case == "lakelet-map" else [stage(i) for i in range(n)]
            out[phase] = (time.perf_counter() - t0) / n * 1000
            assert values[-1] == (n - 1) ** 2
        out["peak_mb"] = _peak_mb()
    elif case == "joblib-memory":
        import joblib

        f = joblib.Memory(work / "joblib", verbose=0).cache(w.trivial)
        for phase in ("first", "cached"):
            t0 = time.perf_counter()
            values = [f(i) for i in range(n)]
            out[phase] = (time.perf_counter() - t0) / n * 1000
            assert values[-1] == (n - 1) ** 2
        out["peak_mb"] = _peak_mb()
    elif case == "first-call":
        import lakelet

        lakelet.use(lakelet.init(work / "lake"))
        t0 = time.perf_counter()
        w.trivial(3)
        plain = time.perf_counter() - t0
        t0 = time.perf_counter()
        w.trivial_stage(3)
        out["over_ms"] = (time.perf_counter() - t0 - plain) * 1000
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


def run_child(case: str, n: int, burn_n: int = 0) -> dict:
    with scratch(f"fanout-{case}") as work:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", case, str(work), str(n), str(burn_n)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent / "src"), str(BENCH)])},
        )
    if proc.returncode != 0:
        raise SystemExit(f"{case} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", nargs=4)
    args = parser.parse_args()
    if args.child:
        case, work, n, burn_n = args.child
        print(json.dumps(child(case, Path(work), int(n), int(burn_n))))
        return
    n = 1_000 if args.quick else 10_000
    cpu_items = 200 if args.quick else 1_000
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
    peaks = {}
    for case in ("lakelet-loop", "lakelet-map", *(["joblib-memory"] if joblib else [])):
        r = run_child(case, n)
        rows.append([case, f"{r['first']:.3f}", f"{r['cached']:.3f}", f"{r['peak_mb']:.0f}"])
        if case == "lakelet-map":
            peaks[n] = r["peak_mb"]
    if n != 1_000:
        peaks[1_000] = run_child("lakelet-map", 1_000)["peak_mb"]
    print(f"\n(a) {n:,} trivial calls, ms per call")
    print(table(["case", "first run", "cached", f"peak RSS MB ({n:,})"], rows))
    print("lakelet-map peak RSS: " + ", ".join(f"{k:,} items {v:.0f} MB" for k, v in sorted(peaks.items())))

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
    times = {c: run_child(c, cpu_items, burn_n)["s"] for c in cases}
    serial = times["cpu-serial"]
    print(f"\n(c) {cpu_items:,} items of ~10 ms CPU on 2 workers (serial loop: {serial:.2f} s)")
    cpu_rows = [[c, f"{t:.2f}", f"{serial / t:.2f}x"] for c, t in times.items()]
    print(table(["case", "seconds", "speed-up over serial"], cpu_rows))
    if joblib:
        print(f"lakelet / joblib.Parallel: {times['cpu-lakelet'] / times['cpu-joblib']:.2f}x the time")


if __name__ == "__main__":
    main()
