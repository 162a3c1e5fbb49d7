"""lakelet.run: scheduler overhead on a wide graph, and speedup of CPU-bound stages on 2 workers.

    .venv/bin/python bench/run.py [--quick]

(a) A wide graph: N trivial stages feeding one join stage. lakelet.run (first
    run: every stage computes and binds its output; second run: all cached)
    against dask.delayed on the same graph (dask's synchronous scheduler, so
    both measure bookkeeping, not parallelism). Reported per stage.
(b) 8 stages of ~1 s of CPU work each (a busy loop, no sleep), run with
    lakelet.run(executor="processes", max_workers=2) against the same stages
    called one after the other: the speedup (target >= 1.8x on 2 cores).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
import time

from _common import machine, median, scratch, table

WIDE = """
import lakelet

{stages}

@lakelet.stage({bindings})
def join(**parts):
    return sum(parts.values())
"""

CPU = """
import time
import lakelet


def burn(seconds):
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1
    return x

{stages}
"""


def _module(folder, name: str, source: str):
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    return importlib.import_module(name)


def wide(work, n: int, reps: int) -> list[list[object]]:
    import dask

    import lakelet

    stages = "\n".join(f"@lakelet.stage\ndef s{i}():\n    return {i}\n" for i in range(n))
    bindings = ", ".join(f"p{i}=s{i}" for i in range(n))
    firsts, seconds, dasks = [], [], []
    for rep in range(reps):
        module = _module(work, f"wide_{rep}", WIDE.format(stages=stages, bindings=bindings))
        lakelet.use(lakelet.init(work / f"lake-wide-{rep}"))
        t0 = time.perf_counter()
        assert lakelet.run(module.join) == n * (n - 1) // 2
        firsts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        lakelet.run(module.join)
        seconds.append(time.perf_counter() - t0)

        def leaf(i: int) -> int:
            return i

        def join(*parts: int) -> int:
            return sum(parts)

        graph = dask.delayed(join)(*[dask.delayed(leaf)(i) for i in range(n)])
        t0 = time.perf_counter()
        assert graph.compute(scheduler="synchronous") == n * (n - 1) // 2
        dasks.append(time.perf_counter() - t0)
    per = n + 1
    cases = [
        ("lakelet.run, first run (compute + bind)", firsts),
        ("lakelet.run, all cached", seconds),
        ("dask.delayed, synchronous", dasks),
    ]
    return [[label, f"{median(ts):.3f}", f"{median(ts) / per * 1e3:.2f}"] for label, ts in cases]


def cpu(work, seconds: float, reps: int) -> tuple[float, float]:
    import lakelet

    stages = "\n".join(
        f"@lakelet.stage\ndef c{i}():\n    return burn({seconds}) * 0 + {i}\n" for i in range(8)
    )
    sequential, parallel = [], []
    for rep in range(reps):
        body = (
            stages
            + "\n@lakelet.stage("
            + ", ".join(f"p{i}=c{i}" for i in range(8))
            + ")\ndef total(**parts):\n    return sum(parts.values())\n"
        )
        module = _module(work, f"cpu_{rep}", CPU.format(stages=body))
        t0 = time.perf_counter()
        for _ in range(8):
            module.burn(seconds)
        sequential.append(time.perf_counter() - t0)
        lakelet.use(lakelet.init(work / f"lake-cpu-{rep}"))
        t0 = time.perf_counter()
        assert lakelet.run(module.total, executor="processes", max_workers=2) == 28
        parallel.append(time.perf_counter() - t0)
    return median(sequential), median(parallel)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="50 stages, 0.2 s CPU stages, 1 repetition")
    args = ap.parse_args()
    n, seconds, reps = (50, 0.2, 1) if args.quick else (200, 1.0, 3)
    print(f"# lakelet.run: {n}-stage wide graph; 8 stages x {seconds} s CPU on 2 workers; median of {reps}")
    print(f"# {machine()}")
    with scratch("run") as work:
        rows = wide(work, n, reps)
        print(table(["wide graph", "median s", "ms per stage"], rows))
        seq, par = cpu(work, seconds, reps)
    speedup = seq / par
    print()
    print(
        table(
            ["8 CPU stages", "median s"],
            [
                ["plain calls, one after the other", f"{seq:.2f}"],
                ["lakelet.run, processes, 2 workers", f"{par:.2f}"],
            ],
        )
    )
    print(f"\nspeedup {speedup:.2f}x: {'PASS' if speedup >= 1.8 else 'MISS'} (target >= 1.8x)")


if __name__ == "__main__":
    main()
