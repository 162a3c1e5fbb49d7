"""Handing lake names to other tools: what ``lakelet://`` and ``os.fspath(File)`` cost.

1. pandas reads one ~100 MB Parquet file: from a plain path (the peer), through
   ``lakelet://`` (fsspec), and through ``os.fspath(lake.file(name))`` (the verified view),
   alternating, median of --reps.
2. ``fs.ls`` of a prefix holding 10,000 names (detail=True, as pandas and Dask ask), against
   ``os.scandir`` + stat of a plain directory of the same 10,000 files, and ``lake.ls``.
3. ``fs.glob`` over a lake of 100,000 names against ``lakelet ls PATTERN --json`` (the CLI, a
   subprocess: start-up included) and ``lake.ls(glob=...)`` of the same set.

``--quick``: 20 MB, 2,000 and 10,000 names, 3 reps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
from _common import MB, machine, median, scratch, table, timed

import lakelet
from lakelet.fs import LakeFileSystem


def _alternating(cases: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Each case once per round, the rounds repeated: a slow patch of the machine hits all."""
    return _alternating_with_cpu(cases, reps)[0]


def _alternating_with_cpu(
    cases: dict[str, Callable[[], object]], reps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """As ``_alternating``, with the CPU time this process spent (all its threads) beside the
    wall time: on a machine that other work keeps busy, wall times swing 2-4x from one run to
    the next, while the CPU a read costs moves far less, so a difference between the cases
    that is lakelet's own shows there first."""
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for fn in cases.values():
        fn()  # warm: imports, page cache, the view link
    for _ in range(reps):
        for name, fn in cases.items():
            started = time.process_time()
            wall[name].append(timed(fn))
            cpu[name].append(time.process_time() - started)
    return wall, cpu


def _report(
    title: str, times: dict[str, list[float]], peer: str, unit: float = 1.0, label: str = "s"
) -> None:
    base = median(times[peer])
    rows = [
        [
            name,
            f"{median(ts) * unit:.4g}",
            f"{median(ts) / base:.2f}x",
            " ".join(f"{t * unit:.3g}" for t in ts),
        ]
        for name, ts in times.items()
    ]
    print(f"\n## {title}\n")
    print(table(["case", f"median ({label})", f"vs {peer}", f"all runs ({label})"], rows))


def parquet_read(root: Path, size_mb: int, reps: int) -> None:
    columns = 4
    rows = size_mb * MB // (8 * columns)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"c{i}": rng.random(rows) for i in range(columns)})
    plain = root / "big.parquet"
    frame.to_parquet(plain, compression=None)  # random doubles do not compress: the size is the size
    lake = lakelet.init(root / "lake")
    lake.add(plain, "data/big.parquet")
    options = {"lake": str(lake.root)}
    size = plain.stat().st_size
    load_before = _load()
    times, cpu = _alternating_with_cpu(
        {
            "plain path (peer)": lambda: pd.read_parquet(plain),
            "lakelet:// (fsspec)": lambda: pd.read_parquet(
                "lakelet://data/big.parquet", storage_options=options
            ),
            "os.fspath(lake.file(name))": lambda: pd.read_parquet(os.fspath(lake.file("data/big.parquet"))),
        },
        reps,
    )
    _report(f"pandas.read_parquet of {size / MB:.0f} MB, median of {reps}", times, "plain path (peer)")
    _report(f"the same reads: CPU time of this process, median of {reps}", cpu, "plain path (peer)")
    print(f"\nload average before / after: {load_before} / {_load()}")
    # the part lakelet adds, without pandas' decoding around it: the bytes alone, and the path alone
    fs = fsspec.filesystem("lakelet", lake=str(lake.root))

    def read_plain() -> int:
        with open(plain, "rb") as f:
            return len(f.read())

    def read_fs() -> int:
        with fs.open("data/big.parquet", "rb") as f:
            return len(f.read())

    times = _alternating({"open(path).read() (peer)": read_plain, "fs.open(name).read()": read_fs}, reps)
    _report(f"reading the {size / MB:.0f} MB whole, median of {reps}", times, "open(path).read() (peer)")
    calls = 100
    times = _alternating(
        {
            "os.fspath(path) (peer)": lambda: [os.fspath(plain) for _ in range(calls)],
            "os.fspath(lake.file(name))": lambda: [
                os.fspath(lake.file("data/big.parquet")) for _ in range(calls)
            ],
        },
        reps,
    )
    _report(f"{calls} calls of os.fspath, median of {reps}", times, "os.fspath(path) (peer)", 1000, "ms")


def _load() -> str:
    """The 1-minute load average, against the CPUs there are: how busy the machine was."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"


def _tiny_tree(folder: Path, count: int, suffix: str) -> None:
    for i in range(count):
        sub = folder / f"d{i % 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"f{i:06d}{suffix}").write_bytes(f"{i}\n".encode())


def listing(root: Path, count: int, reps: int) -> None:
    plain = root / "plain"
    flat = plain / "p"
    flat.mkdir(parents=True)
    for i in range(count):
        (flat / f"f{i:06d}.csv").write_bytes(f"{i}\n".encode())
    lake = lakelet.init(root / "lake")
    lake.add(flat, "p")
    fs = fsspec.filesystem("lakelet", lake=str(lake.root))

    def scandir() -> list[tuple[str, int]]:
        with os.scandir(flat) as entries:
            return [(e.path, e.stat().st_size) for e in entries]

    def fs_ls() -> list[dict[str, object]]:
        fs.invalidate_cache()
        return fs.ls("p", detail=True)  # type: ignore[no-any-return]

    assert len(fs_ls()) == len(scandir()) == count
    times = _alternating(
        {
            "os.scandir + stat (peer)": scandir,
            "fs.ls(detail=True)": fs_ls,
            "lake.ls(prefix)": lambda: lake.ls("p/"),
        },
        reps,
    )
    _report(
        f"listing a prefix of {count:,} names, median of {reps}",
        times,
        "os.scandir + stat (peer)",
        1000,
        "ms",
    )


def globbing(root: Path, count: int, reps: int) -> None:
    source = root / "tree"
    _tiny_tree(source, count, ".csv")
    lake = lakelet.init(root / "lake")
    lake.add(source, "raw")
    fs = LakeFileSystem(lake=lake.root)
    pattern = "raw/**/*.csv"
    cli = [sys.executable, "-m", "lakelet", "--lake", str(lake.root), "ls", pattern, "--json"]

    def cli_ls() -> int:
        out = subprocess.run(cli, capture_output=True, check=True).stdout
        return len(json.loads(out))

    def fs_glob() -> int:
        fs.invalidate_cache()
        return len(fs.glob(pattern))

    assert cli_ls() == fs_glob() == len(lake.ls(glob=pattern)) == count
    times = _alternating(
        {
            f"lakelet ls '{pattern}' --json (CLI)": cli_ls,
            f"fs.glob('{pattern}')": fs_glob,
            f"lake.ls(glob='{pattern}')": lambda: lake.ls(glob=pattern),
        },
        reps,
    )
    _report(f"a glob over {count:,} names, median of {reps}", times, f"lakelet ls '{pattern}' --json (CLI)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", choices=["read", "ls", "glob"], help="run one of the three parts")
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 7)
    print(f"# interop: lakelet://, os.fspath(File), fs.ls, fs.glob\n# {machine()}")
    if args.only in (None, "read"):
        with scratch("interop-read") as root:
            parquet_read(root, 20 if args.quick else 100, reps)
    if args.only in (None, "ls"):
        with scratch("interop-ls") as root:
            listing(root, 2_000 if args.quick else 10_000, reps)
    if args.only in (None, "glob"):
        with scratch("interop-glob") as root:
            globbing(root, 10_000 if args.quick else 100_000, max(3, reps // 2))


if __name__ == "__main__":
    main()
