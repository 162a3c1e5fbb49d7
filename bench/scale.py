"""Scale: what a lake of N names costs a new machine, a listing, an add, fsck and gc.

The remote is built by a **generator** that writes what lakelet writes, through lakelet's
own writers, in remote format 3 (``--formats 2`` for the former one, on a remote whose
marker says 2): each batch of ``--batch`` names (10,000: one directory add) is one pack
holding their objects (each object is its name's bytes, so every digest is distinct),
uploaded to ``packs/``, and one log entry (``Log.append``: its pack line and the name
records, in the remote's format; the records of a batch share one creator, time and meta,
as an add's do). After the last entry it writes a snapshot (``Log.write_snapshot``), as
the machine whose sync passes 1,000 entries would (``Syncer.maybe_snapshot``; the
generator takes it at the end whatever the count, so that a new machine starts from it;
``--no-snapshot`` replays the log instead). Building 1 M names through ``Lake.add`` would
take ~3 minutes of hashing and binding that this benchmark does not measure
(bench/ingest.py does).

Then, per size, on a ``file://`` remote (local-disk times: see bench/sync.py for request
counts):

* **first sync**: a new machine (``lakelet.init`` + ``Lake.sync`` in a child process):
  wall time and the child's peak RSS (``wait4``'s ``ru_maxrss``);
* **index**: ``index.sqlite`` (and its WAL) bytes per name after that sync;
* **one-name add** (write-through: one log entry), **1,000-name prefix ls**: medians of 5,
  in a child process that opened the lake once;
* **``lakelet ls`` start**: the CLI in a subprocess, time to its first byte of output and to
  its end (listing every name), output read through a pipe;
* **fsck**: ``Lake.fsck`` (the index rebuilt; no local objects to hash);
* **gc --remote**: ``Lake.gc(remote=True)`` (nothing to delete: every pack is referenced);
* **remote**: bytes of ``log/`` + ``snapshots/`` per name.

    .venv/bin/python bench/scale.py                       # 100,000 and 1,000,000 names
    .venv/bin/python bench/scale.py --formats 2 3         # the former remote format, then 3
    .venv/bin/python bench/scale.py --sizes 10000         # any sizes
    .venv/bin/python bench/scale.py --sizes 10000000 --skip-cli-ls

``--s3`` runs the same generated remote on moto S3 (bench/remote.py's server, in a child
process), where the figures that matter are requests, counted from the server's log:
the **first sync** of a new machine (time, peak RSS, requests), the **second sync** after
another machine added 10 names (requests, time), **gc --remote** (requests, time), and the
remote's metadata bytes per name. moto is not S3 (~6-8 ms a request here, serialized), so
its times are moto's; the request counts are the store's.

    .venv/bin/python bench/scale.py --s3 --sizes 1000000
    .venv/bin/python bench/scale.py --sizes 1000000 --against /tmp/old/src   # first syncs, old vs this
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from _common import MiB, OtherLoad, load_note, machine, median, scratch, table

from lakelet.core._digest import digest_bytes
from lakelet.core._version import __version__
from lakelet.remote._log import Log
from lakelet.remote._remote import MARKER, REMOTE_FORMAT, Remote
from lakelet.storage._packs import Member, Pack, key_of
from lakelet.storage._refs import NameRecord

PYTHON = sys.executable
LAKELET = [PYTHON, "-m", "lakelet"]


def name_of(i: int) -> str:
    # 1,000 names a folder: a prefix ls of one folder lists 1,000 names
    return f"d{i // 1000:05d}/f{i:09d}.bin"


def _batches(n: int, batch: int) -> Iterator[tuple[int, list[NameRecord], Pack, bytes]]:
    """The generated lake a log entry at a time: (seq, its records, its pack, the pack's bytes).
    The same every time it is called, so the snapshot is written from a second pass rather
    than from every record held in memory (at 10 M names that would be gigabytes)."""
    for seq, start in enumerate(range(0, n, batch), start=1):
        meta = {
            "source": f"/data/batch-{seq}",
            "host": "bench-host",
            "lakelet": __version__,
            "python": "3.11.7",
        }
        created = f"2026-12-01T{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}.000000Z"
        records, members, body, offset = [], [], bytearray(), 0
        for i in range(start, min(n, start + batch)):
            name = name_of(i)
            content = name.encode()
            digest = str(digest_bytes(content))
            records.append(NameRecord("lake", name, digest, len(content), created, "bench", meta))
            members.append(Member(digest, offset, len(content)))
            body += content
            offset += len(content)
        yield seq, records, Pack(str(digest_bytes(bytes(body))), tuple(members)), bytes(body)


def build_remote(root: Path | str, n: int, batch: int, snapshot: bool, version: int) -> float:
    """Write a remote of ``n`` names (at a folder or a URL) as lakelet writes it, in remote
    format ``version``; returns the seconds spent."""
    t0 = time.perf_counter()
    remote = Remote(root.as_uri() if isinstance(root, Path) else root)
    if version != REMOTE_FORMAT:  # an older remote: its marker says so, and lakelet writes that
        remote.put_bytes(MARKER, json.dumps({"format": version}).encode())
    remote.check_format(create=True)
    assert remote.format == version
    log = Log(remote)
    seq = 0
    for seq, records, pack, body in _batches(n, batch):
        remote.put_bytes(key_of(pack.digest), body)
        log.append(seq, records, [pack])
    if snapshot and log.places_records:  # names are made in name order: the records come sorted
        log.write_snapshot(
            seq,
            (
                (r, (pack.digest, m.offset))
                for _, records, pack, _ in _batches(n, batch)
                for r, m in zip(records, pack.members, strict=True)
            ),
            (),  # every member is a name's
        )
    elif snapshot:
        log.write_snapshot(
            seq,
            ((r, None) for _, records, _, _ in _batches(n, batch) for r in records),
            (pack for _, _, pack, _ in _batches(n, batch)),
        )
    return time.perf_counter() - t0


def build_apart(root: Path | str, n: int, batch: int, snapshot: bool, version: int) -> float:
    """``build_remote`` in a process of its own: a child forked from a process that held the
    generated records would count them in its peak RSS (``ru_maxrss`` covers the fork)."""
    argv = [PYTHON, __file__, "--build", str(root), "--sizes", str(n), "--batch", str(batch)]
    argv += ["--formats", str(version), *([] if snapshot else ["--no-snapshot"])]
    done = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True)
    return float(done.stdout)


_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
import lakelet
root, url, step = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
out = {}
t0 = time.perf_counter()
if step == "sync":
    lakelet.init(root, remote=url)
    lake = lakelet.open(root)
    report = lake.sync()
    out["seconds"] = time.perf_counter() - t0
    out["names"] = report.new_names
elif step == "ops":
    lake = lakelet.open(root)
    src = root.parent / "one.txt"
    adds, lss = [], []
    for k in range(5):
        src.write_bytes(b"one %d" % k)
        t = time.perf_counter(); lake.add(src, f"new/{os.getpid()}-{k}.txt")
        adds.append(time.perf_counter() - t)
    for k in range(5):
        t = time.perf_counter(); files = lake.ls(f"d{k:05d}/"); lss.append(time.perf_counter() - t)
        assert len(files) == 1000, len(files)
    out["add"], out["ls"] = adds, lss
elif step == "fsck":
    lake = lakelet.open(root)
    t = time.perf_counter(); report = lake.fsck(); out["seconds"] = time.perf_counter() - t
    out["indexed"] = report.names_indexed
elif step == "add10":
    lakelet.init(root, remote=url)
    lake = lakelet.open(root)
    for k in range(10):
        lake.add(b"new %d" % k, f"new/{k}.txt")
elif step == "second":
    lake = lakelet.open(root)
    report = lake.sync()
    out["seconds"] = time.perf_counter() - t0
    out["names"] = report.new_names
elif step == "gc":
    lake = lakelet.open(root)
    t = time.perf_counter(); report = lake.gc(remote=True); out["seconds"] = time.perf_counter() - t
    out["deleted"] = len(report.remote_objects)
print(json.dumps(out))
"""


def child(root: Path, url: str, step: str, src: Path | None = None) -> tuple[dict[str, object], int]:
    """Run ``step`` in a fresh interpreter (on lakelet from ``src``, when given); returns its
    output, with its CPU seconds (user + system, every thread) as "cpu", and its peak RSS in
    bytes."""
    env = None if src is None else {**os.environ, "PYTHONPATH": str(src)}
    argv = [PYTHON, "-c", _CHILD, str(root), url, step]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"child {step} failed ({proc.returncode})")
    return json.loads(text) | {"cpu": usage.ru_utime + usage.ru_stime}, usage.ru_maxrss * 1024


def first_syncs(work: Path, n: int, url: str, against: Path, rounds: int) -> list[list[object]]:
    """The first sync of the remote at ``url`` by lakelet from ``against`` (another checkout's
    ``src``) and by this one, alternately, ``rounds`` times each: medians and this one's ratio."""
    runs: dict[str, list[tuple[float, float, int]]] = {"against": [], "this": []}
    for k in range(rounds):
        for label, src in (("against", against), ("this", None)):
            synced, rss = child(work / f"first-{label}-{k}", url, "sync", src)
            assert synced["names"] == n, synced
            runs[label].append((float(synced["seconds"]), float(synced["cpu"]), rss))  # type: ignore[arg-type]
            print(
                f"  {label}: first sync {synced['seconds']:.2f} s, CPU {synced['cpu']:.2f} s, "
                f"peak RSS {rss / MiB:.0f} MiB ({load_note()})",
                flush=True,
            )
    medians = {label: [median([r[i] for r in rs]) for i in range(3)] for label, rs in runs.items()}
    rows: list[list[object]] = [
        [f"{n:,}", label, f"{m[0]:.2f} s", f"{m[1]:.2f} s", f"{m[2] / MiB:.0f} MiB"]
        for label, m in medians.items()
    ]
    this, old = medians["this"], medians["against"]
    rows.append(
        [f"{n:,}", "ratio this / against", f"{this[0] / old[0]:.2f}x", f"{this[1] / old[1]:.2f}x", ""]
    )
    return rows


def cli_ls(root: Path, timeout: float) -> tuple[float, float | None]:
    """(seconds to the first byte of `lakelet ls`'s output, seconds to its end or None past
    ``timeout``)."""
    env = {**os.environ, "LAKELET_HOME": str(root), "COLUMNS": "120"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([*LAKELET, "ls"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    proc.stdout.read(1)
    first = time.perf_counter() - t0
    try:
        while proc.stdout.read(1 << 16):
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                proc.wait()
                return first, None
        proc.wait()
    finally:
        proc.stdout.close()
    return first, time.perf_counter() - t0


def folder_bytes(root: Path, *folders: str) -> int:
    total = 0
    for folder in folders:
        for dirpath, _dirs, names in os.walk(root / folder):
            total += sum(os.path.getsize(os.path.join(dirpath, n)) for n in names)
    return total


def index_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.glob("index.sqlite*"))


def run_size(work: Path, n: int, version: int, args: argparse.Namespace) -> list[object]:
    remote_root, b_root = work / f"remote-{n}", work / f"machine-{n}"
    remote_root.mkdir()
    built = build_apart(remote_root, n, args.batch, not args.no_snapshot, version)
    url = remote_root.as_uri()
    print(f"  {n:,} names, format {version}: remote built in {built:.1f} s", flush=True)
    synced, rss = child(b_root, url, "sync")
    assert synced["names"] == n, synced
    print(f"  first sync {synced['seconds']:.2f} s, peak RSS {rss / MiB:.0f} MiB", flush=True)
    index = index_bytes(b_root)
    ops, _ = child(b_root, url, "ops")
    add_ms = median(ops["add"]) * 1000  # type: ignore[arg-type]
    ls_ms = median(ops["ls"]) * 1000  # type: ignore[arg-type]
    print(f"  one-name add {add_ms:.1f} ms, 1,000-name ls {ls_ms:.1f} ms", flush=True)
    if args.skip_cli_ls:
        first, whole = float("nan"), None
    else:
        first, whole = cli_ls(b_root, args.ls_timeout)
        print(f"  lakelet ls: first byte {first:.2f} s, whole {whole}", flush=True)
    fsck, _ = child(b_root, url, "fsck")
    print(f"  fsck {fsck['seconds']:.2f} s", flush=True)
    gc, _ = child(b_root, url, "gc")
    print(f"  gc --remote {gc['seconds']:.2f} s", flush=True)
    log, snapshots = folder_bytes(remote_root, "log"), folder_bytes(remote_root, "snapshots")
    return [
        f"{n:,}",
        str(version),
        f"{synced['seconds']:.2f} s",
        f"{rss / MiB:.0f} MiB",
        f"{add_ms:.1f} ms",
        f"{ls_ms:.1f} ms",
        f"{first:.2f} s",
        "—" if whole is None else f"{whole:.1f} s",
        f"{fsck['seconds']:.2f} s",
        f"{gc['seconds']:.2f} s",
        f"{index / n:.0f} B",
        f"{log / n:.0f} B",
        f"{snapshots / n:.0f} B",
    ]


def _start(title: str) -> OtherLoad:
    """Print the run's header (what, the machine, its load); returns the load's watch."""
    print(title)
    print(f"# {machine()}")
    print(f"# {load_note()}")
    return OtherLoad()


def _where(args: argparse.Namespace) -> dict[str, Path]:
    """``scratch``'s keyword for ``--work``, if given."""
    return {} if args.work is None else {"root": args.work}


def run_s3(server: object, work: Path, n: int, args: argparse.Namespace) -> list[object]:
    """One size on moto S3: build, then count each step's requests in the server's log."""
    from remote import BUCKET

    url = f"s3://{BUCKET}/scale-{n}-{os.getpid()}"
    built = build_apart(url, n, args.batch, not args.no_snapshot, REMOTE_FORMAT)
    print(f"  {n:,} names on moto S3: remote built in {built:.1f} s", flush=True)
    b_root, c_root = work / "b", work / "c"

    def step(root: Path, name: str) -> tuple[dict[str, object], int, int]:
        mark = server.mark()  # type: ignore[attr-defined]
        out, rss = child(root, url, name)
        return out, rss, server.since(mark)[0]  # type: ignore[attr-defined]

    synced, rss, first_requests = step(b_root, "sync")
    assert synced["names"] == n, synced
    print(f"  first sync {synced['seconds']:.2f} s, {rss / MiB:.0f} MiB, {first_requests} requests")
    step(c_root, "add10")
    second, _, second_requests = step(b_root, "second")
    assert second["names"] == 10, second
    print(f"  second sync (10 new names) {second['seconds']:.2f} s, {second_requests} requests")
    gc, _, gc_requests = step(b_root, "gc")
    print(f"  gc --remote {gc['seconds']:.2f} s, {gc_requests} requests", flush=True)
    import fsspec

    fs = fsspec.filesystem("s3")
    prefix = url.removeprefix("s3://")
    log, snapshots = (fs.du(f"{prefix}/{folder}") for folder in ("log", "snapshots"))
    return [
        f"{n:,}",
        f"{synced['seconds']:.2f} s",
        f"{rss / MiB:.0f} MiB",
        str(first_requests),
        f"{second['seconds']:.2f} s",
        str(second_requests),
        f"{gc['seconds']:.2f} s",
        str(gc_requests),
        f"{log / n:.0f} B",
        f"{snapshots / n:.0f} B",
    ]


def main_s3(args: argparse.Namespace) -> None:
    from remote import MotoServer

    from lakelet.core._environ import patched_environ

    load = _start(f"# scale: moto S3 remote, {args.batch:,} names a log entry")
    rows = []
    with scratch("scale-s3", **_where(args)) as work:
        server = MotoServer(work)
        try:
            with patched_environ(server.env):
                for n in args.sizes:
                    (work / str(n)).mkdir()
                    rows.append(run_s3(server, work / str(n), n, args))
        finally:
            server.stop()
    headers = [
        "names",
        "first sync",
        "its peak RSS",
        "its requests",
        "second sync (10 new)",
        "its requests",
        "gc --remote",
        "its requests",
        "log / name",
        "snapshot / name",
    ]
    print(table(headers, rows))
    print(f"# {load.note()}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch", type=int, default=10_000, help="names per log entry (one add)")
    parser.add_argument("--formats", type=int, nargs="+", default=[REMOTE_FORMAT], help="remote formats")
    parser.add_argument("--no-snapshot", action="store_true", help="a new machine replays the log")
    parser.add_argument("--skip-cli-ls", action="store_true")
    parser.add_argument("--ls-timeout", type=float, default=120.0)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default bench/.work)")
    parser.add_argument("--s3", action="store_true", help="on moto S3, requests counted (see above)")
    parser.add_argument("--build", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--against", type=Path, default=None, help="first syncs only: another checkout's src")
    parser.add_argument("--rounds", type=int, default=3, help="with --against: syncs of each")
    args = parser.parse_args()
    if args.build is not None:  # (build_apart's child)
        where = args.build if "://" in args.build else Path(args.build)
        print(build_remote(where, args.sizes[0], args.batch, not args.no_snapshot, args.formats[0]))
        return
    if args.s3:
        main_s3(args)
        return
    if args.against is not None:
        compare_first_syncs(args)
        return
    load = _start(f"# scale: file:// remote, {args.batch:,} names a log entry")
    rows = []
    kwargs = _where(args)
    for n in args.sizes:
        for version in args.formats:
            with scratch(f"scale-{n}-{version}", **kwargs) as work:
                rows.append(run_size(work, n, version, args))
    headers = [
        "names",
        "remote format",
        "first sync",
        "its peak RSS",
        "one-name add",
        "1,000-name ls",
        "`lakelet ls` 1st byte",
        "`lakelet ls` all",
        "fsck",
        "gc --remote",
        "index / name",
        "log / name",
        "snapshot / name",
    ]
    print(table(headers, rows))
    print(f"# {load.note()}")


def compare_first_syncs(args: argparse.Namespace) -> None:
    load = _start(
        f"# first sync: this checkout against {args.against}, alternately, medians of {args.rounds}"
    )
    rows = []
    kwargs = _where(args)
    for n in args.sizes:
        with scratch(f"scale-first-{n}", **kwargs) as work:
            remote_root = work / "remote"
            remote_root.mkdir()
            built = build_apart(remote_root, n, args.batch, not args.no_snapshot, args.formats[0])
            print(f"  {n:,} names: remote built in {built:.1f} s", flush=True)
            rows += first_syncs(work, n, remote_root.as_uri(), args.against, args.rounds)
    print(table(["names", "lakelet", "first sync", "its CPU", "its peak RSS"], rows))
    print(f"# {load.note()}")


if __name__ == "__main__":
    main()
