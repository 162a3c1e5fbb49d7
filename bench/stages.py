"""Stage caching overhead: lakelet's @stage against LWDP's @stage and joblib.Memory.

Two measurements on this machine:

(a) cached call: a 3-stage pipeline with small outputs (a list of 100 ints ->
    doubled -> summed). After a first call has stored every stage, the last
    stage is called N times (2000; 200 with --quick) and each call is timed;
    median and p95 in ms. Each library runs in its own fresh process
    (LWDP's import sets the root logger to INFO, which would make lakelet log
    too), with $HOME pointed at a scratch dir for LWDP (it caches under
    ~/.lwdp_cache). LWDP stores pandas DataFrames only, so its stages return
    one-column frames; it is measured with its default csv cache and with
    parquet. joblib is measured two ways: the last function called alone
    (joblib checks only that function's code and arguments, not its upstream),
    and chained as total(doubled(numbers())) (three lookups, the upstream
    values hashed as arguments).

(b) first-run overhead: a stage doing ~1 s of deterministic CPU work (0.25 s
    with --quick), run once in a fresh lake, against calling the plain
    function. Each repetition is a fresh process (so lakelet's code hashing,
    lineage and git lookups are paid as in a real first run), timing the plain
    call and the stage call in alternating order; median of 5 (3 with --quick).

Targets: cached call <= 1 ms median and below both peers; first-run overhead <= 5 %.

    .venv/bin/python bench/stages.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import OtherLoad, load_note, machine, median, scratch, table, timed

# --- the pipeline, one flavour per library (module level: all three read the source) ---


def numbers():
    return list(range(100))


def doubled(rows):
    return [2 * x for x in rows]


def total(rows):
    return sum(rows)


def lw_numbers():
    import pandas as pd

    return pd.DataFrame({"x": list(range(100))})


def lw_doubled(rows):
    import pandas as pd

    return pd.DataFrame({"x": [2 * int(x) for x in rows["x"]]})


def lw_total(rows):
    import pandas as pd

    return pd.DataFrame({"total": [int(rows["x"].sum())]})


_JOBLIB: dict = {}  # the memoized functions, for the "last stage only" joblib flavour


def jb_numbers():
    return list(range(100))


def jb_doubled():
    return [2 * x for x in _JOBLIB["numbers"]()]


def jb_total():
    return sum(_JOBLIB["doubled"]())


def burn(n):
    """~1 s of CPU for the calibrated n: integer arithmetic, no allocation, no sleep."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) % 1_000_003
    return acc


EXPECTED_TOTAL = 2 * sum(range(100))

# --- children: one library, one fresh process ---


def _time_calls(call, calls: int) -> list[float]:
    for _ in range(20):  # warm-up: imports, first file opens
        call()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def child_cached(case: str, work: Path, calls: int) -> dict:
    if case == "lakelet":
        import lakelet

        lake = lakelet.init(work / "lake")
        lakelet.use(lake)
        s1 = lakelet.stage(numbers)
        s2 = lakelet.stage(rows=s1)(doubled)
        s3 = lakelet.stage(rows=s2)(total)
        assert s3() == EXPECTED_TOTAL
        call = s3
        check = lambda v: v == EXPECTED_TOTAL  # noqa: E731
    elif case.startswith("lwdp"):
        import logging

        from lwdp.stage import stage as lw_stage

        logging.getLogger().setLevel(logging.WARNING)  # lwdp's import turned INFO on for everyone
        (work / ".lwdp_cache").mkdir(exist_ok=True)
        fmt = case.split("-", 1)[1]
        s1 = lw_stage(cache=True, cache_format=fmt)(lw_numbers)
        s2 = lw_stage(cache=True, cache_format=fmt, rows=s1)(lw_doubled)
        s3 = lw_stage(cache=True, cache_format=fmt, rows=s2)(lw_total)
        call = s3
        check = lambda v: int(v["total"].iloc[0]) == EXPECTED_TOTAL  # noqa: E731
        assert check(s3())
    elif case.startswith("joblib"):
        from joblib import Memory

        memory = Memory(location=work / "joblib", verbose=0)
        if case == "joblib-last":
            _JOBLIB["numbers"] = memory.cache(jb_numbers)
            _JOBLIB["doubled"] = memory.cache(jb_doubled)
            call = memory.cache(jb_total)
        else:
            m1, m2, m3 = memory.cache(numbers), memory.cache(doubled), memory.cache(total)

            def call():
                return m3(m2(m1()))

        check = lambda v: v == EXPECTED_TOTAL  # noqa: E731
        assert check(call())
    else:
        raise SystemExit(f"unknown case {case}")
    assert check(call())
    times = _time_calls(call, calls)
    return {"times": times}


def child_first_run(work: Path, n: int, lakelet_first: bool) -> dict:
    import lakelet

    lake = lakelet.init(work / "lake")
    lakelet.use(lake)
    st = lakelet.stage(burn)
    out = {}

    def plain():
        t0 = time.perf_counter()
        value = burn(n)
        out["plain"] = time.perf_counter() - t0
        return value

    def staged():
        t0 = time.perf_counter()
        value = st(n=n)
        out["lakelet"] = time.perf_counter() - t0
        return value

    order = (staged, plain) if lakelet_first else (plain, staged)
    values = [f() for f in order]
    assert values[0] == values[1]
    t0 = time.perf_counter()
    assert st(n=n) == values[0]  # and it is cached now
    out["then_cached"] = time.perf_counter() - t0
    return out


def run_child(args: list[str], env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the parent ---


def calibrate(target_s: float) -> int:
    """n for a target_s call of burn: the fastest of 3 runs of at least 0.3 s (other load only slows)."""
    n = 200_000
    while True:
        t0 = time.perf_counter()
        burn(n)
        if time.perf_counter() - t0 > 0.3:
            break
        n *= 2
    dt = min(timed(lambda: burn(n)) for _ in range(3))
    return int(n * target_s / dt)


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100)[94]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200 cached calls, 0.25 s stage, 3 fresh lakes")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--lakelet-first", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child == "first-run":
        print(json.dumps(child_first_run(Path(args.work), args.n, args.lakelet_first)))
        return
    if args.child:
        print(json.dumps(child_cached(args.child, Path(args.work), args.calls)))
        return

    calls = 200 if args.quick else 2000
    work_s = 0.25 if args.quick else 1.0
    reps = 3 if args.quick else 5

    import joblib

    try:
        from importlib.metadata import version

        lwdp_version = version("lwdp")
    except Exception:  # noqa: BLE001
        lwdp_version = None
    import lakelet

    print(
        f"# stages: cached call of the last of 3 stages x {calls}; first run of a ~{work_s:g} s stage,"
        f" median of {reps} fresh processes"
    )
    print(f"# {machine()}")
    lwdp_note = lwdp_version or "not installed"
    print(f"# lakelet {lakelet.__version__}, lwdp {lwdp_note}, joblib {joblib.__version__}")
    print(f"# at start: {load_note()}")
    load = OtherLoad()

    # (a) cached call
    cases = [
        ("lakelet", "lakelet @stage"),
        ("lwdp-csv", "lwdp @stage (csv cache, its default)"),
        ("lwdp-parquet", "lwdp @stage (parquet cache)"),
        ("joblib-last", "joblib.Memory, last function alone (upstream unchecked)"),
        ("joblib-chain", "joblib.Memory, total(doubled(numbers()))"),
    ]
    results: dict[str, list[float]] = {}
    failures: dict[str, str] = {}
    for case, label in cases:
        if case.startswith("lwdp") and lwdp_version is None:
            failures[case] = "lwdp is not installed (pip install lwdp==0.0.5)"
            continue
        with scratch(f"stages-{case}") as work:
            try:
                out = run_child(
                    ["--child", case, "--work", str(work), "--calls", str(calls)], env={"HOME": str(work)}
                )
            except RuntimeError as e:
                failures[case] = str(e).strip().splitlines()[-1]
                print(f"  {label}: FAILED: {failures[case]}")
                continue
        results[case] = out["times"]
        print(f"  {label}: median {median(out['times']) * 1e3:.3f} ms")

    rows = []
    for case, label in cases:
        if case in results:
            ts = results[case]
            rows.append((label, f"{median(ts) * 1e3:.3f}", f"{p95(ts) * 1e3:.3f}", f"{min(ts) * 1e3:.3f}"))
        else:
            rows.append((label, "failed", "-", "-"))
    print()
    print(table(["cached call of the last stage", "median ms", "p95 ms", "min ms"], rows))

    # (b) first-run overhead
    n = calibrate(work_s)
    plain, staged, cached = [], [], []
    for rep in range(reps):
        with scratch(f"stages-first-{rep}") as work:
            args_ = ["--child", "first-run", "--work", str(work), "--n", str(n)]
            out = run_child(args_ + (["--lakelet-first"] if rep % 2 else []))
        plain.append(out["plain"])
        staged.append(out["lakelet"])
        cached.append(out["then_cached"])
        print(f"  first run {rep + 1}: plain {out['plain']:.3f} s, lakelet {out['lakelet']:.3f} s")
    # the fixed cost alone, which the ~1 s timings above blur with noise: the first (and only)
    # stage call of a fresh process on a fresh lake, for a stage with next to no work (n=1)
    fixed = []
    for rep in range(reps):
        with scratch(f"stages-fixed-{rep}") as work:
            out = run_child(["--child", "first-run", "--work", str(work), "--n", "1", "--lakelet-first"])
        fixed.append(out["lakelet"] - out["plain"])
    overhead = median(staged) / median(plain) - 1
    paired = median([s - p for s, p in zip(staged, plain, strict=True)])
    print()

    def row(label: str, xs: list[float], digits: int = 3) -> tuple[str, ...]:
        return (label, *(f"{v:.{digits}f}" for v in (median(xs), min(xs), max(xs))))

    print(
        table(
            ["first run (fresh lake, fresh process)", "median s", "min s", "max s"],
            [
                row("plain function", plain),
                row("lakelet @stage, first run", staged),
                row("lakelet @stage, then cached", cached, 4),
                row("lakelet fixed cost: first run of an n=1 stage", fixed, 4),
            ],
        )
    )
    fixed_share = median(fixed) / median(plain)
    print(
        f"\nfirst-run overhead: {overhead:+.1%} of the plain call "
        f"(median of per-process differences: {paired * 1e3:+.0f} ms); "
        f"fixed cost {median(fixed) * 1e3:.0f} ms = {fixed_share:.1%} of the plain call"
    )

    # verdicts
    print()
    lk = results.get("lakelet")
    if lk is None:
        print("MISS cached call: lakelet failed")
    else:
        lk_med = median(lk)
        print(f"{'PASS' if lk_med <= 1e-3 else 'MISS'} cached call median {lk_med * 1e3:.3f} ms <= 1 ms")
        for peer in ("lwdp", "joblib"):
            peer_meds = {c: median(t) for c, t in results.items() if c.startswith(peer)}
            if not peer_meds:
                print(f"n/a  cached call vs {peer}: {failures.get(peer + '-csv', 'no result')}")
                continue
            for case, peer_med in sorted(peer_meds.items(), key=lambda kv: kv[1]):
                verdict = "PASS" if lk_med < peer_med else "MISS"
                print(
                    f"{verdict} cached call below {case} ({peer_med * 1e3:.3f} ms): "
                    f"{peer_med / lk_med:.2f}x lakelet's time"
                )
    print(f"{'PASS' if overhead <= 0.05 else 'MISS'} first-run overhead {overhead:+.1%} <= 5%")
    print(
        f"{'PASS' if fixed_share <= 0.05 else 'MISS'} first-run fixed cost {fixed_share:.1%} "
        f"of a {median(plain):.2f} s stage <= 5%"
    )
    print(f"\n# at end: {load_note()}; {load.note()}")


if __name__ == "__main__":
    main()
