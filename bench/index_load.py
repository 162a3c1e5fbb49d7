"""The index's side of a first sync: ``Catalog.load_snapshot`` of N names, against the floor.

A **generator** makes the pieces a snapshot parser hands the index (``SnapshotPiece``: the
columns of 50,000 names, every value already validated; names as bench/scale.py names
them, ``d00000/f000000000.bin``, 10,000 an add sharing one batch line, each add one pack of
its 10,000 objects), so this measures the load alone: no download, no gunzip, no parsing
(the log's side, measured by bench/scale.py once both sides are merged). The generator's
own time is measured as a step of its own and subtracted from the others. Per size, each
step in a fresh child process (its wall time and ``ru_maxrss``), on one disk:

* **load_snapshot**: into a new, empty index; then the index's bytes per name;
* **floor**: the same rows by plain ``sqlite3`` into a bare table of the same shape
  (``executemany`` in name order, then the digest index): what SQLite alone costs;
* **apply_remote** (``--replay``): the same names through the record path a log entry
  takes (one ``NameRecord`` each, made from the pieces: counted).

    .venv/bin/python bench/index_load.py                      # 100,000 and 1,000,000 names
    .venv/bin/python bench/index_load.py --sizes 100000 --replay
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from _common import MiB, OtherLoad, load_note, machine, scratch, table

PYTHON = sys.executable

_CHILD = r"""
import json, sys, time, sqlite3
from pathlib import Path
from lakelet.catalog._catalog import Catalog
from lakelet.catalog._schema import digest_blob, digest_text
from lakelet.core._digest import digest_bytes
from lakelet.storage._packs import Member, Pack
from lakelet.storage._refs import NameRecord, PackMembers, SnapshotPiece

path, n, step = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
PER_ADD, PIECE = 10_000, 50_000
META = '{"host":"bench-host","lakelet":"0.1","python":"3.11.7","source":"/data/batch-%d"}'


def pieces():
    for start in range(0, n, PIECE):
        names = [f"d{i // 1000:05d}/f{i:09d}.bin" for i in range(start, min(n, start + PIECE))]
        digests = [digest_blob(str(digest_bytes(name.encode()))) for name in names]
        adds = range(start // PER_ADD, (start + len(names) - 1) // PER_ADD + 1)
        shared = [(a, f"2026-12-01T00:00:{a % 60:02d}.000000Z", "bench", META % a) for a in adds]
        packs = []
        for a in adds:
            members = [(d, 40 * k) for k, (d, i) in enumerate(zip(digests, range(start, n)))
                       if i // PER_ADD == a]
            packs.append(PackMembers(str(digest_bytes(b"pack %d" % a)), [d for d, _ in members],
                                     [offset for _, offset in members], [40] * len(members)))
        batches = [(start + k) // PER_ADD for k in range(len(names))]
        yield SnapshotPiece(shared, ["lake"] * len(names), names, digests, [28] * len(names),
                            batches, [None] * len(names), packs, [])


t0 = time.perf_counter()
if step == "generate":  # what the other steps' times include: subtracted from them
    for _ in pieces():
        pass
elif step == "load":
    Catalog(path).load_snapshot(n, pieces())
elif step == "floor":
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE t (scope INTEGER, name TEXT, digest BLOB, size INTEGER, batch INTEGER, "
               "removed_at TEXT, remote INTEGER, PRIMARY KEY (scope, name)) WITHOUT ROWID")
    db.execute("BEGIN")
    for p in pieces():
        db.executemany("INSERT INTO t VALUES (1, ?, ?, ?, ?, NULL, 1)",
                       zip(p.names, p.digests, p.sizes, p.batches))
    db.execute("CREATE INDEX t_by_digest ON t (digest)")
    db.execute("COMMIT")
elif step == "replay":
    catalog = Catalog(path)
    with catalog.applying_remote() as apply:
        for p in pieces():
            shared = {b: (c, who, json.loads(meta)) for b, c, who, meta in p.shared}
            packs = [Pack(m.pack, tuple(map(Member, map(digest_text, m.digests), m.offsets, m.sizes)))
                     for m in p.packs]
            apply(n, [NameRecord("lake", name, digest_text(d), size, *shared[b])
                      for name, d, size, b in zip(p.names, p.digests, p.sizes, p.batches)], packs, [])
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds}))
"""


def child(path: Path, n: int, step: str) -> tuple[float, int]:
    """Run ``step`` in a fresh interpreter; returns its seconds and its peak RSS in bytes."""
    proc = subprocess.Popen(
        [PYTHON, "-c", _CHILD, str(path), str(n), step], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"child {step} failed")
    return float(json.loads(text)["seconds"]), usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--replay", action="store_true", help="also time apply_remote (slow)")
    args = parser.parse_args()
    print(machine())
    other = OtherLoad()
    rows = []
    steps = ["generate", "load", "floor"] + (["replay"] if args.replay else [])
    with scratch("index-load") as work:
        for n in args.sizes:
            generated = 0.0
            for step in steps:
                path = work / f"{step}-{n}.sqlite"
                seconds, rss = child(path, n, step)
                net = seconds if step == "generate" else seconds - generated
                generated = seconds if step == "generate" else generated
                size = sum(p.stat().st_size for p in work.glob(f"{step}-{n}.sqlite*"))
                per_name = f"{size / n:.0f} B" if size else "—"
                rows.append(
                    [
                        f"{n:,}",
                        step,
                        f"{net:.2f} s",
                        f"{net / n * 1e6:.1f} µs",
                        f"{rss / MiB:,.0f} MiB",
                        per_name,
                    ]
                )
                for p in work.glob(f"{step}-{n}.sqlite*"):
                    p.unlink()
    print(table(["names", "", "time (less generating)", "a name", "peak RSS", "file / name"], rows))
    print(load_note())
    print(other.note())


if __name__ == "__main__":
    main()
