"""Datasets as Delta tables against delta-rs (the ``deltalake`` package) on the same data, same run.

- read a version: ``lake.dataset(name, version=1).to_arrow()`` against
  ``deltalake.DeltaTable(folder, version=0).to_pyarrow_table()`` of the same table (N rows, then a
  small append, so both time-travel); one process, one warm-up each, alternating, median of 7.
- open the latest version of a table of C one-row commits (a checkpoint every 10; the first 20
  made by ``write_dataset``, the others generated as it makes them: ``_generate_commits``):
  ``lake.dataset(name)`` against ``deltalake.DeltaTable(folder)``; alternating, median of 7.
  lakelet remembers the latest table per process (checked against its log files' stat), so
  it is also timed with nothing remembered (the checkpoint read), and each side in a new
  process (imports done before the clock starts), alternating, 7 processes each.
- merge 1 % of the rows (changed values for existing ids) into the N-row table:
  ``lake.write_dataset(name, changes, mode="merge", keys=["id"])`` against delta-rs's
  ``merge(...).when_matched_update_all().when_not_matched_insert_all()`` on a copy of the
  same table; each in a fresh process (peak RSS is the process's), alternating, median of R.

The write itself (lakelet's Delta commit included) against plain pyarrow is bench/datasets.py.

    .venv/bin/python bench/delta.py [--rows N] [--commits C] [--merge-reps R]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import load_note, machine, median, peak_rss_mib, scratch, table

NAME = "bench/events"
DAYS = [f"2025-01-{d:02d}" for d in range(1, 31)]


def _data(rows: int, seed: int = 0):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(rows, dtype=np.int64),
            "value": rng.random(rows),
            "dt": pa.array(DAYS).take(rng.integers(0, len(DAYS), rows)),
        }
    )


def _changes(rows: int):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(1)
    ids = np.sort(rng.choice(rows, rows // 100, replace=False))
    return pa.table(
        {
            "id": ids,
            "value": rng.random(len(ids)) + 10,
            "dt": pa.array(DAYS).take(rng.integers(0, 30, len(ids))),
        }
    )


def _generate_commits(lake, name: str, numbers: range) -> None:
    """One-row commits onto ``name`` as ``lake.write_dataset(name, pa.table({"i": [i]}))`` makes
    them — the same Parquet file, the same commit built by lakelet's own ``commit_body`` (file
    statistics, lineage, column statistics and samples) and a checkpoint every 10 commits by
    delta-rs — without what makes 10,000 real writes take ~10 minutes here: pyarrow's dataset
    writer, the file system sync and the conditional create per commit."""
    import deltalake
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lakelet.datasets import _commits, _delta_log, _stats
    from lakelet.datasets._datasets import CHECKPOINT_INTERVAL, Datasets
    from lakelet.datasets._files import Written, _delta_stats
    from lakelet.storage._objects import hash_file

    store = Datasets(lake.context)
    folder = store.root / name
    latest = store.latest_version(name) - 1
    base = store.snapshot(name, latest)
    schema = pa.schema([("i", pa.int64())])
    for i in numbers:
        staged = folder / f".gen-{i}.parquet"
        pq.write_table(pa.table({"i": [i]}, schema=schema), staged, compression="zstd")
        digest, size = hash_file(staged)
        relative = f"part-{digest.hexdigest[:32]}.parquet"
        staged.rename(folder / relative)
        column = _stats.ColumnStats("i", pa.int64())
        column.update(pa.array([i]))
        column.observe(i, i)
        written = Written(relative, str(digest), size, 1, {})
        written.stats = _delta_stats(pq.read_metadata(folder / relative), {"i": (i, i)}, {"i": pa.int64()})
        new = _commits.Write([written], {"i": column.to_json()}, 1, schema, [], "append", {})
        when = int(time.time() * 1000)
        version = latest + 1
        body = _commits.commit_body(name, new, [new.add_file(written, when)], version, base, when)
        (folder / "_delta_log" / f"{version:020d}.json").write_bytes(body)
        base, latest = _delta_log.apply(base, _delta_log.parse_commit(body, name, version), name), version
        if version % CHECKPOINT_INTERVAL == 0:
            deltalake.DeltaTable(str(folder), version=version).create_checkpoint()


def child(kind: str, work: Path, rows: int, reps: int) -> dict:
    import deltalake

    import lakelet

    folder = work / "lake" / "datasets" / NAME
    if kind == "setup":  # here, so that the parent stays small: a child inherits its peak RSS
        import pyarrow as pa

        commits = reps
        lake = lakelet.init(work / "lake")
        t0 = time.perf_counter()
        lake.write_dataset(NAME, _data(rows), partition_by=["dt"])
        extra = _data(1000, seed=2).set_column(0, "id", pa.array(range(rows, rows + 1000)))
        lake.write_dataset(NAME, extra)
        wrote = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(min(commits, 20)):  # the real writer, checkpoints and all
            lake.write_dataset("bench/log", pa.table({"i": [i]}))
        real = time.perf_counter() - t0
        t0 = time.perf_counter()
        _generate_commits(lake, "bench/log", range(20, commits))
        return {
            "wrote": wrote,
            "committed": real,
            "generated": time.perf_counter() - t0,
            "rss": peak_rss_mib(),
        }
    if kind == "merge-lakelet":
        lake = lakelet.open(work / "lake")
        changes = _changes(rows)
        t0 = time.perf_counter()
        ds = lake.write_dataset(NAME, changes, mode="merge", keys=["id"])
        return {"time": time.perf_counter() - t0, "rss": peak_rss_mib(), "rows": ds.num_rows}
    if kind == "merge-deltars":
        changes = _changes(rows)
        t0 = time.perf_counter()
        dt = deltalake.DeltaTable(str(work / "copy"))
        zstd = deltalake.WriterProperties(compression="ZSTD")  # what lakelet writes
        (
            dt.merge(
                source=changes,
                predicate="t.id = s.id",
                source_alias="s",
                target_alias="t",
                writer_properties=zstd,
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        elapsed = time.perf_counter() - t0
        return {
            "time": elapsed,
            "rss": peak_rss_mib(),
            "rows": deltalake.DeltaTable(str(work / "copy")).count(),
        }
    if kind in ("fresh-lakelet", "fresh-deltars"):  # a new process: imports done, nothing read
        import pyarrow.compute
        import pyarrow.dataset
        import pyarrow.parquet  # noqa: F401

        import lakelet.datasets._datasets  # noqa: F401  (what lake.dataset imports on first use)

        path = work / "lake" / "datasets" / "bench" / "log"
        lake = lakelet.open(work / "lake")
        t0 = time.perf_counter()
        answer = (
            lake.dataset("bench/log").num_rows
            if kind == "fresh-lakelet"
            else deltalake.DeltaTable(str(path)).version() + 1
        )
        return {"time": time.perf_counter() - t0, "answer": answer}
    if kind in ("read", "open"):
        lake = lakelet.open(work / "lake")
        target = NAME if kind == "read" else "bench/log"
        path = folder if kind == "read" else work / "lake" / "datasets" / "bench" / "log"
        from lakelet.datasets import _remembered

        def cold() -> int:  # what a new process pays: nothing of the table remembered
            _remembered.forget_all()
            return int(lake.dataset(target).num_rows)

        sides = {
            "lakelet": (lambda: lake.dataset(target, version=1).to_arrow())
            if kind == "read"
            else (lambda: lake.dataset(target).num_rows),
            "delta-rs": (lambda: deltalake.DeltaTable(str(path), version=0).to_pyarrow_table())
            if kind == "read"
            else (lambda: deltalake.DeltaTable(str(path)).version() + 1),
        }
        if kind == "open":
            sides["lakelet, nothing remembered"] = cold
        out: dict = {}
        for side, fn in sides.items():
            t0 = time.perf_counter()
            value = fn()  # the first call: nothing of the table in this process yet
            first = time.perf_counter() - t0
            out[side] = {"answer": value.num_rows if kind == "read" else value, "times": [], "first": first}
        for i in range(reps):
            for side in list(sides) if i % 2 == 0 else list(sides)[::-1]:
                t0 = time.perf_counter()
                sides[side]()
                out[side]["times"].append(time.perf_counter() - t0)
        out["rss"] = peak_rss_mib()
        return out
    raise SystemExit(f"unknown child {kind}")


def run_child(kind: str, work: Path, rows: int, reps: int = 1) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--work",
        str(work),
        "--rows",
        str(rows),
        "--reps",
        str(reps),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--commits", type=int, default=10_000)
    parser.add_argument("--merge-reps", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--work")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, Path(args.work), args.rows, args.reps)), flush=True)
        # no interpreter teardown: a child that used both deltalake's runtime and pyarrow's
        # pools sometimes aborts there ("terminate called without an active exception")
        os._exit(0)

    import deltalake
    import pyarrow as pa

    import lakelet

    print(f"# delta: {args.rows:,} rows (id, value, dt: 30 values), {args.commits:,} one-row commits")
    print(f"# {machine()}")
    print(f"# lakelet {lakelet.__version__}, deltalake {deltalake.__version__}, pyarrow {pa.__version__}")
    print(f"# at start: {load_note()}")
    with scratch("delta") as work:
        setup = run_child("setup", work, args.rows, args.commits)
        print(f"  wrote the table in {setup['wrote']:.1f} s", flush=True)
        real = min(args.commits, 20)
        each = setup["committed"] / max(1, real) * 1e3
        print(
            f"  made {real} one-row commits with write_dataset in {setup['committed']:.1f} s "
            f"({each:.0f} ms each)"
        )
        print(
            f"  generated {args.commits - real:,} more (bench/delta.py: _generate_commits) "
            f"in {setup['generated']:.0f} s"
        )
        read = run_child("read", work, args.rows, 7)
        opened = run_child("open", work, args.rows, 7)
        fresh: dict[str, list[dict]] = {"lakelet": [], "delta-rs": []}
        for i in range(7):  # alternating, each in a new process
            for side in ("lakelet", "delta-rs") if i % 2 == 0 else ("delta-rs", "lakelet"):
                fresh[side].append(run_child(f"fresh-{side.replace('-', '')}", work, args.rows))
        opened["lakelet, a new process"] = {
            "times": [x["time"] for x in fresh["lakelet"]],
            "first": fresh["lakelet"][0]["time"],
            "answer": fresh["lakelet"][0]["answer"],
        }
        opened["delta-rs, a new process"] = {
            "times": [x["time"] for x in fresh["delta-rs"]],
            "first": fresh["delta-rs"][0]["time"],
            "answer": fresh["delta-rs"][0]["answer"],
        }

        merges: dict[str, list[dict]] = {"lakelet": [], "delta-rs": []}
        pristine = work / "pristine"
        shutil.copytree(work / "lake" / "datasets" / NAME, pristine)
        for i in range(args.merge_reps):
            for side in ("lakelet", "delta-rs") if i % 2 == 0 else ("delta-rs", "lakelet"):
                folder = work / "lake" / "datasets" / NAME
                shutil.rmtree(folder)
                shutil.copytree(pristine, folder)
                shutil.rmtree(work / "copy", ignore_errors=True)
                shutil.copytree(pristine, work / "copy")
                subprocess.run(["sync"], check=False)
                merges[side].append(
                    run_child(f"merge-{'lakelet' if side == 'lakelet' else 'deltars'}", work, args.rows)
                )
                print(f"  merge {side}: {merges[side][-1]['time']:.2f} s", flush=True)

    rows = []
    for label, result in (("read version 1 (time travel)", read), ("open the latest version", opened)):
        for side in [s for s in result if s != "rss"]:
            peer = "delta-rs, a new process" if "new process" in side else "delta-rs"
            base = median(result[peer]["times"])
            m = median(result[side]["times"])
            cold = result[side]["first"] * 1e3
            rows.append(
                [
                    f"{label}: {side}",
                    f"{m * 1e3:.1f} ms",
                    f"{m / base:.2f}x",
                    f"{cold:.1f} ms",
                    result[side]["answer"],
                ]
            )
    base = median([m["time"] for m in merges["delta-rs"]]) if args.merge_reps else 0
    for side in ("lakelet", "delta-rs") if args.merge_reps else ():
        m = median([x["time"] for x in merges[side]])
        rss = max(x["rss"] for x in merges[side])
        label = f"merge 1% ({args.rows // 100:,} rows): {side}"
        rows.append([label, f"{m:.2f} s", f"{m / base:.2f}x", "-", f"peak RSS {rss:.0f} MiB"])
    print()
    print(table(["measurement", "median", "vs delta-rs", "first call (imports too)", "rows / memory"], rows))
    print(
        f"\n  peak RSS: the writer {setup['rss']:.0f} MiB, the read process (both readers) "
        f"{read['rss']:.0f} MiB, the open process {opened['rss']:.0f} MiB"
    )
    print(f"# at end: {load_note()}")


if __name__ == "__main__":
    main()
