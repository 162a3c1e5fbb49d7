"""Dataset write and filtered read: lakelet's write_dataset/to_arrow against plain pyarrow.dataset.

The data: 10 million rows (1 million with --quick) of id int64, value float64,
name (10 random lowercase letters), ts timestamp[us], category (8 values) and
dt (30 date strings, uniformly mixed), in 1 Mi-row batches. It is generated
once with numpy into an uncompressed Arrow IPC stream under bench/.work, and
every measurement streams it back as a ``pyarrow.RecordBatchReader`` (plain
file reads, not mmap, so the resident set is the writer's, not the file's).

Each measurement runs in a fresh process, which reports its wall time, its CPU
time (user + system, all threads: steadier than wall time when other work shares the
machine) and its peak RSS (``ru_maxrss``); "read the source only" is the baseline both writers
pay on top.

- write: ``lake.write_dataset(name, reader, partition_by=["dt"], compression="zstd")``
  (statistics, content-named files, one syncfs, the Delta commit) against
  ``pyarrow.dataset.write_dataset(reader, dir, format="parquet", partitioning=["dt"],
  partitioning_flavor="hive", file_options=zstd)``; fresh output dir per rep,
  lakelet and pyarrow alternating, median of 3 (2 with --quick, N with --write-reps N).
  "pyarrow + syncfs" is shown for reference: lakelet makes the files durable, pyarrow
  alone does not. Between runs (untimed) the parent syncs, so that no run's flush
  pays for the unsynced output of the run before it (syncfs writes back the whole
  filesystem).
- filtered read of one dt partition: ``lake.dataset(name).to_arrow(filter=...)``
  against ``pyarrow.dataset.dataset(dir, partitioning="hive").to_table(filter=...)``
  on the last rep's outputs; one process, one warm-up each, then lakelet and pyarrow
  alternating, median of 15 reads each (4 with --quick).

Targets: write <= 1.15x pyarrow's time; filtered read <= 1.1x pyarrow's.
``--profile`` also runs one lakelet write and read under cProfile and prints the hot spots.

    .venv/bin/python bench/datasets.py [--quick] [--profile] [--write-reps N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import OtherLoad, du_bytes, fs_type, load_note, machine, median, peak_rss_mib, scratch, table

BATCH = 1 << 20
DAYS = [f"2025-01-{d:02d}" for d in range(1, 31)]
CATEGORIES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
PICK = DAYS[14]  # the partition the filtered read asks for
DATASET = "bench/events"


def generate(path: Path, rows: int) -> tuple[int, int]:
    """Write the source IPC stream; returns (rows, bytes)."""
    import numpy as np
    import pyarrow as pa

    days = pa.array(DAYS)
    categories = pa.array(CATEGORIES)
    base = np.datetime64("2025-01-01T00:00:00", "us").astype(np.int64)
    day_us = 86_400 * 1_000_000
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("value", pa.float64()),
            ("name", pa.string()),
            ("ts", pa.timestamp("us")),
            ("category", pa.string()),
            ("dt", pa.string()),
        ]
    )
    written = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for i, start in enumerate(range(0, rows, BATCH)):
            n = min(BATCH, rows - start)
            rng = np.random.default_rng(i)
            day = rng.integers(0, len(DAYS), n, dtype=np.int32)
            letters = rng.integers(ord("a"), ord("z") + 1, n * 10, dtype=np.uint8)
            offsets = np.arange(0, 10 * (n + 1), 10, dtype=np.int32)
            name = pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(letters))
            ts = base + day.astype(np.int64) * day_us + rng.integers(0, day_us, n, dtype=np.int64)
            batch = pa.record_batch(
                [
                    pa.array(np.arange(start, start + n, dtype=np.int64)),
                    pa.array(rng.standard_normal(n) * 100.0),
                    name,
                    pa.array(ts, type=pa.timestamp("us")),
                    categories.take(pa.array(rng.integers(0, len(CATEGORIES), n, dtype=np.int32))),
                    days.take(pa.array(day)),
                ],
                schema=schema,
            )
            writer.write_batch(batch)
            written += n
    return written, path.stat().st_size


# --- children: one measurement, one fresh process ---


def _source(src: Path):
    import pyarrow as pa

    return pa.ipc.open_stream(pa.OSFile(str(src), "rb"))


def child(kind: str, src: Path, out: Path, reps: int, profile: bool) -> dict:
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    import lakelet
    from lakelet.storage._objects import sync_filesystem

    result: dict = {"rss_before_mib": peak_rss_mib()}
    zstd = pads.ParquetFileFormat().make_write_options(compression="zstd")
    flt = pads.field("dt") == PICK

    if kind == "drain":

        def op():
            reader = _source(src)
            return sum(b.num_rows for b in reader)
    elif kind == "write-lakelet":
        lake = lakelet.init(out / "lake")

        def op():
            ds = lake.write_dataset(
                DATASET, _source(src), partition_by=["dt"], mode="append", compression="zstd"
            )
            return ds.num_rows
    elif kind in ("write-pyarrow", "write-pyarrow-sync"):

        def op():
            pads.write_dataset(
                _source(src),
                out / "plain",
                format="parquet",
                partitioning=["dt"],
                partitioning_flavor="hive",
                file_options=zstd,
            )
            if kind == "write-pyarrow-sync":
                sync_filesystem(out)
            return None
    elif kind == "read-lakelet":
        lake = lakelet.open(out / "lake")

        def op():
            return lake.dataset(DATASET).to_arrow(filter=flt)
    elif kind == "read-pyarrow":

        def op():
            return pads.dataset(out / "plain", partitioning="hive").to_table(filter=flt)
    elif kind == "read-both":  # alternating in one process: a load change hits both sides alike
        lake = lakelet.open(out / "lake")
        sides = {
            "lakelet": lambda: lake.dataset(DATASET).to_arrow(filter=flt),
            "pyarrow": lambda: pads.dataset(out / "plain", partitioning="hive").to_table(filter=flt),
        }
        for name, read in sides.items():
            table = read()  # warm-up, and the same answer from both
            result[name] = {
                "rows": table.num_rows,
                "id_sum": pc.sum(table["id"]).as_py(),
                "dt_values": sorted(set(table["dt"].unique().to_pylist())),
                "times": [],
            }
        for i in range(reps):
            for name in ["lakelet", "pyarrow"] if i % 2 == 0 else ["pyarrow", "lakelet"]:
                t0 = time.perf_counter()
                sides[name]()
                result[name]["times"].append(time.perf_counter() - t0)
        result["peak_rss_mib"] = peak_rss_mib()
        return result
    else:
        raise SystemExit(f"unknown child {kind}")

    if kind.startswith("read"):
        warm = op()
        result["rows"] = warm.num_rows
        result["id_sum"] = pc.sum(warm["id"]).as_py()
        result["dt_values"] = sorted(set(warm["dt"].unique().to_pylist()))
    if profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(op)
        result["times"] = [time.perf_counter() - t0]
        text = io.StringIO()
        stats = pstats.Stats(prof, stream=text).strip_dirs()
        stats.sort_stats("cumulative").print_stats(22)
        stats.sort_stats("tottime").print_stats(12)
        result["profile"] = text.getvalue()
    else:
        times = []
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(reps):
            t0 = time.perf_counter()
            value = op()
            times.append(time.perf_counter() - t0)
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        result["times"] = times
        result["cpu_s"] = (cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime) / reps
        if kind in ("drain", "write-lakelet"):
            result["rows"] = value
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_child(kind: str, src: Path, out: Path, reps: int = 1, profile: bool = False) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--src",
        str(src),
        "--out",
        str(out),
        "--reps",
        str(reps),
    ]
    proc = subprocess.run(cmd + (["--profile"] if profile else []), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the parent ---


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 million rows, 2 write reps, 3 reads")
    ap.add_argument("--profile", action="store_true", help="also profile one lakelet write and read")
    ap.add_argument("--write-reps", type=int, help="write runs of each kind (default 3, 2 with --quick)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.src), Path(args.out), args.reps, args.profile)))
        return

    rows = 1_000_000 if args.quick else 10_000_000
    write_reps = args.write_reps or (2 if args.quick else 3)
    read_reps = 4 if args.quick else 15

    import pyarrow as pa

    import lakelet

    print(
        f"# datasets: {rows:,} rows x 6 columns in {BATCH:,}-row batches, partitioned by dt (30 values), "
        f"zstd; write median of {write_reps}, filtered read median of {read_reps}"
    )
    print(f"# {machine()}")
    print(f"# lakelet {lakelet.__version__}, pyarrow {pa.__version__}")
    print(f"# at start: {load_note()}")

    with scratch("datasets") as work:
        print(f"# scratch on {fs_type(work)}")
        src = work / "source.arrows"
        t0 = time.perf_counter()
        n, size = generate(src, rows)
        print(f"  generated {n:,} rows ({size / 1e6:.0f} MB IPC) in {time.perf_counter() - t0:.1f} s")
        load = OtherLoad()

        drain = run_child("drain", src, work / "drain", reps=write_reps)
        assert drain["rows"] == rows
        print(f"  read the source only: {[round(t, 3) for t in drain['times']]} s")

        kinds = ["write-lakelet", "write-pyarrow", "write-pyarrow-sync"]
        runs: dict[str, list[dict]] = {k: [] for k in kinds}
        outs: dict[str, Path] = {}
        for rep in range(write_reps):
            order = kinds if rep % 2 == 0 else kinds[::-1]
            for kind in order:
                out = work / f"{kind}-{rep}"
                out.mkdir()
                r = run_child(kind, src, out)
                os.sync()  # untimed: the next run starts with nothing of this one left to write back
                runs[kind].append(r)
                if kind == "write-lakelet":
                    assert r["rows"] == rows, r
                files, allocated = du_bytes(out)
                r["files"], r["bytes"] = files, allocated
                print(
                    f"  {kind} rep {rep + 1}: {r['times'][0]:.2f} s, CPU {r['cpu_s']:.2f} s, "
                    f"peak RSS {r['peak_rss_mib']:.0f} MiB, {files} files, {allocated / 1e6:.0f} MB"
                )
                if kind == "write-pyarrow-sync":
                    shutil.rmtree(out)
                    continue
                if kind in outs:  # keep only the last rep of each, for the reads
                    shutil.rmtree(outs[kind])
                outs[kind] = out

        def wt(kind: str) -> float:
            return median([r["times"][0] for r in runs[kind]])

        def cpu(kind: str) -> float:
            return median([r["cpu_s"] for r in runs[kind]])

        def rss(kind: str) -> float:
            return median([r["peak_rss_mib"] for r in runs[kind]])

        labels = {
            "write-lakelet": "lakelet write_dataset (stats, digests, syncfs, Delta commit)",
            "write-pyarrow": "pyarrow.dataset.write_dataset",
            "write-pyarrow-sync": "pyarrow.dataset.write_dataset + syncfs (reference)",
        }
        base = wt("write-pyarrow")
        write_rows = [
            (
                "read the source only (baseline)",
                f"{median(drain['times']):.2f}",
                "-",
                f"{drain['cpu_s']:.2f}",
                "-",
                f"{drain['peak_rss_mib']:.0f}",
            )
        ]
        for kind in kinds:
            write_rows.append(
                (
                    labels[kind],
                    f"{wt(kind):.2f}",
                    f"{wt(kind) / base:.2f}x",
                    f"{cpu(kind):.2f}",
                    f"{cpu(kind) / cpu('write-pyarrow'):.2f}x",
                    f"{rss(kind):.0f}",
                )
            )
        print()
        headers = ["write", "median s", "vs pyarrow", "CPU s", "CPU vs pyarrow", "peak RSS MiB"]
        print(table(headers, write_rows))

        # filtered read of one partition, on the last rep's outputs (both in the page cache: warm)
        lake_out, plain_out = outs["write-lakelet"], outs["write-pyarrow"]
        (plain_out / "plain").rename(lake_out / "plain")  # one --out for both children
        both = run_child("read-both", src, lake_out, reps=read_reps)
        a, b = both["lakelet"], both["pyarrow"]
        assert (a["rows"], a["id_sum"]) == (b["rows"], b["id_sum"]), (a, b)
        assert a["dt_values"] == [PICK], a["dt_values"]
        for k, r in (("lakelet", a), ("pyarrow", b)):
            print(f"  read {k}: {[round(t * 1e3, 1) for t in r['times']]} ms")
        rbase = median(b["times"])
        read_rows = [
            (
                f"lakelet to_arrow(filter=dt=={PICK!r})",
                f"{median(a['times']) * 1e3:.1f}",
                f"{min(a['times']) * 1e3:.1f}",
                f"{median(a['times']) / rbase:.2f}x",
                f"{a['rows']:,}",
            ),
            (
                "pyarrow dataset(hive).to_table(filter=...)",
                f"{rbase * 1e3:.1f}",
                f"{min(b['times']) * 1e3:.1f}",
                "1.00x",
                f"{b['rows']:,}",
            ),
        ]
        print()
        headers = ["filtered read (warm, alternating)", "median ms", "min ms", "vs pyarrow", "rows"]
        print(table(headers, read_rows))

        write_ratio = wt("write-lakelet") / base
        read_ratio = median(a["times"]) / rbase
        print()
        verdict = {True: "PASS", False: "MISS"}
        print(f"{verdict[write_ratio <= 1.15]} write {write_ratio:.2f}x pyarrow's time <= 1.15x")
        print(f"{verdict[read_ratio <= 1.10]} filtered read {read_ratio:.2f}x pyarrow's <= 1.10x")
        print(f"\n# at end: {load_note()}; {load.note()}")

        if args.profile:
            prof_out = work / "profile"
            prof_out.mkdir()
            for kind, out in (("write-lakelet", prof_out), ("read-lakelet", lake_out)):
                r = run_child(kind, src, out, profile=True)
                print(f"\n## cProfile of one {kind} ({r['times'][0]:.2f} s)\n")
                print(r["profile"])


if __name__ == "__main__":
    main()
