"""Scoped stores: ranged reads with ``gets(name, byte_range=...)`` and listings with ``list(prefix)``.

(i) ``lake.user.put`` of a 1 GiB file, then ``gets(name, byte_range=[begin, begin + 1024])``
    at several offsets: median latency per offset, and the bytes that went through read
    syscalls per call (/proc/self/io ``rchar``, which also counts SQLite's page reads), to
    show a ranged read does not read (or re-hash) the whole object. The peer is plain
    Python file I/O on the source file: ``open``, ``seek``, ``read(1024)``, close.
(ii) 100,000 names ``runs/<6 digits>/part-<k>.txt`` (10,000 runs of 10 parts) created with
    ``puts`` in ``lake.pipeline("bench")`` (creation is timed too), then ``list("")`` of all
    of them and ``list("runs/0001")`` (runs 000100-000199: 1,000 names), median of 5.
    The peer is the same tree as plain files, created in the same run: ``os.walk`` (plus
    a sort, since ``list`` is sorted) for everything, ``glob`` for the subset.

Both the object and the plain files were just written, so they are in the page cache
alike. Targets: ``list("")`` of 100,000 names in < 0.2 s; a 1 KiB ``gets`` reads far less
than the object (< 1 MiB through read syscalls per call).

    .venv/bin/python bench/scoped.py            # 1 GiB object, 100,000 names (~8 min here)
    .venv/bin/python bench/scoped.py --quick    # 128 MiB object, 2,000 names
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from collections.abc import Callable
from pathlib import Path

from _common import (
    GiB,
    MiB,
    OtherLoad,
    fs_type,
    load_note,
    machine,
    median,
    proc_io,
    scratch,
    table,
    timed,
    write_random_file,
)

import lakelet

RANGE = 1024
TARGET_LIST_S = 0.2


def io_call(fn: Callable[[], bytes]) -> tuple[float, int, bytes]:
    """(seconds, rchar delta, result) of one call."""
    before = proc_io()["rchar"]
    t0 = time.perf_counter()
    data = fn()
    seconds = time.perf_counter() - t0
    return seconds, proc_io()["rchar"] - before, data


def plain_range(path: Path, begin: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(begin)
        return f.read(end - begin)


def human(n: int) -> str:
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n:,}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ranged_reads(work: Path, size: int, calls: int) -> bool:
    """(i): gets with a byte range against open/seek/read. Returns whether the target is met."""
    src = work / "big.bin"
    write_random_file(src, size)
    os.sync()  # the put below should not pay for writing back the source
    root = work / "lake"
    lake = lakelet.init(root)
    store = lake.user
    put_s = timed(lambda: store.put("big.bin", src))
    print(f"  put of {human(size)} into {store.scope}: {put_s:.3f} s")

    offsets = [0, 4096 + 17, size // 3, size // 2, size - RANGE]
    rows = []
    worst = 0
    for begin in offsets:
        end = begin + RANGE
        expected = plain_range(src, begin, end)
        store.gets("big.bin", byte_range=[begin, end])  # warm-up: Python-level caches, not data

        def ours_call(b: int = begin, e: int = end) -> bytes:
            return store.gets("big.bin", byte_range=[b, e])

        def peer_call(b: int = begin, e: int = end) -> bytes:
            return plain_range(src, b, e)

        ours = [io_call(ours_call) for _ in range(calls)]
        peer = [io_call(peer_call) for _ in range(calls)]
        assert all(data == expected for _, _, data in ours + peer), f"wrong bytes at {begin}"
        t_ours, t_peer = median([s for s, _, _ in ours]), median([s for s, _, _ in peer])
        r_ours = [r for _, r, _ in ours]
        worst = max(worst, *r_ours)
        rows.append(
            (
                f"[{begin:,}, {end:,})",
                f"{t_ours * 1e6:,.0f}",
                f"{median(r_ours):,.0f} / {max(r_ours):,}",
                f"{t_peer * 1e6:,.0f}",
                f"{median([r for _, r, _ in peer]):,.0f}",
                f"{t_ours / t_peer:.1f}x",
            )
        )
    lake.close()

    # A new Lake object: the verified-blob cache lives in the index, so no re-hash either.
    reopened = lakelet.open(root)
    begin = size // 2
    first_s, first_r, _ = io_call(lambda: reopened.user.gets("big.bin", byte_range=[begin, begin + RANGE]))
    reopened.close()

    print()
    print(f"(i) gets of {RANGE:,} bytes from a {human(size)} object, median of {calls} calls per offset")
    print()
    print(
        table(
            [
                "byte range",
                "gets median µs",
                "gets rchar/call (median / max)",
                "open+seek+read median µs",
                "plain rchar/call",
                "gets vs plain (time)",
            ],
            rows,
        )
    )
    print(
        f"\nfirst gets at [{begin:,}, {begin + RANGE:,}) on a newly opened Lake: {first_s * 1e6:,.0f} µs, "
        f"rchar {first_r:,} bytes"
    )
    worst = max(worst, first_r)
    ok = worst < MiB
    print(
        f"\n{verdict(ok)} gets reads only the range: at most {worst:,} bytes through read syscalls per "
        f"call, object {size:,} bytes; target < {MiB:,}"
    )
    return ok


def listings(work: Path, count: int, reps: int) -> bool:
    """(ii): list(prefix) over ``count`` scoped names against os.walk and glob of plain files."""
    runs = count // 10
    names = [f"runs/{r:06d}/part-{k}.txt" for r in range(runs) for k in range(10)]
    subset_prefix = "runs/0001"
    root = work / "lake"
    lake = lakelet.init(root)
    store = lake.pipeline("bench")

    print(f"\n  creating {len(names):,} names with puts into {store.scope} ...", flush=True)
    t0 = time.perf_counter()
    step = max(1, len(names) // 10)
    for i, name in enumerate(names, 1):
        store.puts(name, f"{name}\n".encode())
        if i % step == 0:
            elapsed = time.perf_counter() - t0
            print(f"    {i:,} names in {elapsed:.1f} s ({i / elapsed:,.0f} puts/s)", flush=True)
    create_ours = time.perf_counter() - t0

    plain = work / "plain"
    t0 = time.perf_counter()
    for name in names:
        path = plain / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{name}\n".encode())
    create_peer = time.perf_counter() - t0
    print(f"  plain files: {create_peer:.1f} s", flush=True)
    os.sync()

    def walk_all() -> list[str]:
        out = []
        for dirpath, _dirs, files in os.walk(plain):
            rel = os.path.relpath(dirpath, plain)
            out += [f"{rel}/{f}" for f in files]
        return sorted(out)

    def glob_subset() -> list[str]:
        return sorted(glob.glob(f"{subset_prefix}*/*", root_dir=plain))

    # the first listing of a newly opened Lake (its SQLite page cache is cold)
    lake.close()
    lake = lakelet.open(root)
    store = lake.pipeline("bench")
    first_all = timed(lambda: store.list(""))

    results: dict[str, list[float]] = {k: [] for k in ("all", "all-peer", "sub", "sub-peer")}
    for _ in range(reps):
        for key, fn in (
            ("all", lambda: store.list("")),
            ("all-peer", walk_all),
            ("sub", lambda: store.list(subset_prefix)),
            ("sub-peer", glob_subset),
        ):
            results[key].append(timed(fn))
    assert store.list("") == walk_all() == names
    subset = store.list(subset_prefix)
    assert subset == glob_subset() and subset == [n for n in names if n.startswith(subset_prefix)]
    lake.close()

    t = {k: median(v) for k, v in results.items()}
    rows = [
        (
            f"create {len(names):,} names",
            f"{create_ours:.3f}",
            "write_bytes of plain files (no fsync)",
            f"{create_peer:.3f}",
            f"{create_ours / create_peer:.1f}x",
        ),
        (
            f'list("") of {len(names):,}',
            f"{t['all']:.3f}",
            "os.walk + sort",
            f"{t['all-peer']:.3f}",
            f"{t['all'] / t['all-peer']:.2f}x",
        ),
        (f'list("") of {len(names):,}, first call after open', f"{first_all:.3f}", "", "", ""),
        (
            f'list("{subset_prefix}") of {len(subset):,}',
            f"{t['sub']:.4f}",
            f'glob("{subset_prefix}*/*")',
            f"{t['sub-peer']:.4f}",
            f"{t['sub'] / t['sub-peer']:.2f}x",
        ),
    ]
    print()
    print(f"(ii) list(prefix) over {len(names):,} scoped names, median of {reps}")
    print()
    print(table(["operation", "lakelet s", "peer", "peer s", "lakelet vs peer (time)"], rows))
    print(
        f"\ncreation: {create_ours / len(names) * 1e3:.2f} ms per puts, "
        f"{create_peer / len(names) * 1e3:.3f} ms per plain file"
    )
    ok = t["all"] < TARGET_LIST_S
    print(
        f'\n{verdict(ok)} list("") of {len(names):,} names: median {t["all"]:.3f} s; '
        f"target < {TARGET_LIST_S} s"
    )
    return ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="128 MiB object, 2,000 names")
    ap.add_argument("--names", type=int, help="how many scoped names to list (default 100,000)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each listing (default 5)")
    args = ap.parse_args()
    size = 128 * MiB if args.quick else GiB
    count = args.names or (2_000 if args.quick else 100_000)
    if count < 2_000 or count % 10:
        ap.error("--names must be a multiple of 10, at least 2,000 (runs/0001 must exist)")
    calls = 5 if args.quick else 25

    other = OtherLoad()
    print("# scoped stores: ranged gets and list(prefix)")
    print(f"# {machine()}")
    print(f"# lakelet {lakelet.__version__}; {load_note()} at start")
    with scratch("scoped-gets") as work:
        print(f"# {fs_type(work)} at {work}")
        gets_ok = ranged_reads(work, size, calls)
    with scratch("scoped-list") as work:
        list_ok = listings(work, count, args.reps)
    print(f"\n# {load_note()} at end; {other.note()}")
    print("\ntargets:")
    print(f'- {verdict(list_ok)} list("") of {count:,} names < {TARGET_LIST_S} s')
    print(f"- {verdict(gets_ok)} ranged gets reads only the range (< 1 MiB per call)")


if __name__ == "__main__":
    main()
