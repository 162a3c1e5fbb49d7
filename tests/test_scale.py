"""Lakes of many names: every operation works a batch at a time (``LAKELET_BATCH``), so its
memory depends on the batch, not on the lake; listings page.

The lakes here hold a few thousand names (big sizes are bench/scale.py's). Memory is
sampled with tracemalloc: the same operation on the same lake, with a batch of 100 and
with a batch bigger than the lake, must peak well apart. Only the file:// remote: what is
measured is the reading side, the same code on every store.
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lakelet
from lakelet.remote import _sync
from tests.test_index import back_to_schema_5

pytestmark = pytest.mark.parametrize("remote", ["file"], indirect=True)

N = 3000


def _peak(fn: Callable[[], object]) -> int:
    """The most memory Python objects held while ``fn`` ran."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _add_many(lake: lakelet.Lake, tmp_path: Path, n: int = N, per_add: int = 100) -> None:
    """``n`` names, ``many/00000.txt``…, added ``per_add`` at a time (a log entry, a pack each:
    a pack line is one line, read whole)."""
    for start in range(0, n, per_add):
        folder = tmp_path / "many" / f"{start}"
        folder.mkdir(parents=True)
        for i in range(start, min(n, start + per_add)):
            (folder / f"{i:05d}.txt").write_text(f"file {i}")
        lake.add(folder, "many")


def _peaks(
    machine, monkeypatch: pytest.MonkeyPatch, run: Callable[[lakelet.Lake], object]
) -> tuple[int, int]:
    """(peak with a batch of 100, peak with one batch for the whole lake) of ``run`` on two new
    machines; a third runs it first, so that neither pays for importing what it uses."""
    run(machine("warm"))
    small, whole = machine("small"), machine("whole")
    monkeypatch.setenv("LAKELET_BATCH", "100")
    in_batches = _peak(lambda: run(small))
    monkeypatch.setenv("LAKELET_BATCH", str(10 * N))
    at_once = _peak(lambda: run(whole))
    assert {f.name for f in small.ls()} == {f.name for f in whole.ls()}
    return in_batches, at_once


def test_a_first_sync_loads_the_snapshot_a_batch_at_a_time(machine, remote, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(_sync, "SNAPSHOT_EVERY", 1)  # a snapshot after every entry
    # twice the other tests' lake: a name costs a piece ~250 B (its digest a 33-byte blob), and
    # the whole lake's piece must stand well clear of what a sync holds whatever its size
    n = 2 * N
    a = machine("a")
    _add_many(a, tmp_path, n)
    a.sync()
    snapshot = Path(remote.url.removeprefix("file://")) / f"snapshots/{n // 100:012d}"
    assert (snapshot / "manifest.json").is_file()

    in_batches, at_once = _peaks(machine, monkeypatch, lambda lake: lake.sync())
    assert len(machine("again").ls()) == 0  # (a machine not synced lists nothing)
    assert in_batches < at_once / 2, (in_batches, at_once)

    # Read in pieces, a snapshot is still taken whole or not at all: one whose last row is
    # bad binds nothing of its first pieces (the log binds the names instead)
    (shard,) = snapshot.glob("names-*.parquet")
    table = pq.read_table(shard)
    names = table.column("name").to_pylist()
    names[-1] = "~/../x"  # (still sorted last)
    pq.write_table(table.set_column(0, "name", pa.array(names)), shard)
    monkeypatch.setenv("LAKELET_BATCH", "100")
    b = machine("b")
    report = b.sync()
    assert len(report.problems) == 1 and f"snapshot {n // 100} ignored" in report.problems[0]
    assert report.entries_read == n // 100 and len(b.ls()) == n


def test_gc_asks_the_index_a_batch_of_objects_at_a_time(machine, monkeypatch, tmp_path) -> None:
    a = machine("a")
    _add_many(a, tmp_path)
    for lake in (machine("warm"), machine("small"), machine("whole")):
        lake.sync()
        lake.pull()  # every object local: gc looks at each

    in_batches, at_once = _peaks(machine, monkeypatch, lambda lake: lake.gc())
    assert in_batches < at_once / 2, (in_batches, at_once)


def test_push_sends_a_log_entry_per_batch(machine, monkeypatch, tmp_path) -> None:
    a = machine("a", upload="deferred")
    _add_many(a, tmp_path)
    monkeypatch.setenv("LAKELET_BATCH", "1000")
    assert a.push().names == N
    report = machine("b").sync()
    assert (report.new_names, report.entries_read) == (N, 3)  # (N names in N / 100 adds)
    assert a.status()["unpushed"] == 0


def test_ls_pages_with_limit_and_after(machine, tmp_path) -> None:
    a = machine("a")
    _add_many(a, tmp_path, 250)
    everything = [f.name for f in a.ls("many/")]
    pages, after = [], ""
    while page := a.ls("many/", limit=100, after=after):
        pages.append([f.name for f in page])
        after = page[-1].name
    assert [len(p) for p in pages] == [100, 100, 50]
    assert [n for p in pages for n in p] == everything == sorted(everything)
    assert a.ls("many/", limit=0) == []
    assert [f.name for f in a.ls("many/0024", after="many/00245.txt")] == [
        f"many/{i:05d}.txt" for i in range(246, 250)
    ]
    for bad in (-1, 1.5, "10"):
        with pytest.raises(lakelet.InvalidArgumentError):
            a.ls("many/", limit=bad)


def test_the_index_keeps_what_the_names_of_an_add_share_once(remote, tmp_path) -> None:
    # an add's source folder (in every record's meta) 1,000 bytes long: held once per add, the
    # index of N names holds it far fewer than N times
    folder = tmp_path.joinpath(*["s" * 249] * 4)
    folder.mkdir(parents=True)
    for i in range(N):
        (folder / f"{i:05d}.txt").write_text(f"file {i}")
    a = lakelet.init(tmp_path / "lake")  # (a remote's side of the index is not shared: see bench)
    a.add(folder, "many")
    index = sum(p.stat().st_size for p in a.root.glob("index.sqlite*"))
    assert index < N * 500, index / N
    assert {f.meta["source"] for f in a.ls()} == {str(folder)}  # (every record keeps it)


# what a lakelet of index schema 4 made of the tables of schema 5 (names and pack digests
# in every row): a lake it left behind (from schema 6 to 5 first: tests/test_index.py)
_BACK_TO_SCHEMA_4 = """
CREATE TABLE names4 AS SELECT * FROM names;
DROP VIEW names; DROP TABLE name_rows; DROP TABLE batches;
CREATE TABLE names (
    scope TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
    created_at TEXT NOT NULL, creator TEXT NOT NULL, meta TEXT NOT NULL, removed_at TEXT,
    PRIMARY KEY (scope, name)
) WITHOUT ROWID;
INSERT INTO names SELECT * FROM names4; DROP TABLE names4;
CREATE INDEX names_by_digest ON names (digest);
CREATE TABLE packed4 (digest TEXT PRIMARY KEY, pack TEXT NOT NULL, offset INTEGER NOT NULL,
    size INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO packed4 SELECT m.digest, p.digest, m.offset, m.size FROM packed m JOIN packs p ON p.id = m.pack;
DROP TABLE packed; DROP TABLE packs; ALTER TABLE packed4 RENAME TO packed;
CREATE INDEX packed_by_pack ON packed (pack);
PRAGMA user_version = 4;
"""


def test_an_index_of_schema_4_is_upgraded_in_place(machine, make_file) -> None:
    a = machine("a")
    a.add(make_file("d/1.txt", "one").parent, "d")
    make_file("e/3.txt", "three")
    a.add(make_file("e/2.txt", "two").parent, "e")  # two small files: one pack
    b = machine("b")
    b.sync()
    before = {f.name: (f.digest, f.meta, f.created_at) for f in b.ls()}
    last_sync = b.status()["last_sync"]
    b.context.catalog.close()
    back_to_schema_5(b.root)
    db = sqlite3.connect(b.root / "index.sqlite")
    db.executescript(_BACK_TO_SCHEMA_4)
    db.close()

    # b learned its names from the remote and holds no record of them: rebuilt from its
    # records, its index would list none until the next sync
    b = lakelet.open(b.root)
    assert {f.name: (f.digest, f.meta, f.created_at) for f in b.ls()} == before
    assert b.status()["last_sync"] == last_sync
    assert b.file("e/2.txt").read_bytes() == b"two"  # from its pack, as the index placed it
    assert b.sync().new_names == 0 and b.fsck().ok
