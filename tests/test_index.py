"""The index (schema 7): a snapshot bulk-loaded gives exactly the state its records applied one
by one give, all or nothing; an index of schema 5 left by an older lakelet is upgraded in
place and goes on listing, syncing and fetching."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import lakelet
from lakelet.catalog._catalog import Catalog
from lakelet.catalog._schema import digest_blob
from lakelet.core._digest import digest_bytes
from lakelet.core.errors import CorruptRecordError
from lakelet.storage._packs import Member, Pack
from lakelet.storage._refs import NameRecord, PackMembers, SnapshotPiece
from lakelet.storage._sweeps import Sweep

T1, T2 = "2026-01-01T00:00:00.000000Z", "2026-01-02T00:00:00.000000Z"
GONE = "2026-01-03T00:00:00.000000Z"


def _d(text: str) -> str:
    return str(digest_bytes(text.encode()))


def _snapshot() -> list[list[NameRecord]]:
    """Records of a snapshot in two pieces; the second piece's first add began in the first.
    It holds what a forged one may: a name bound twice (to the same content, and to other
    content) and a tombstone after its name's binding."""
    add1 = {"source": "/data/one", "host": "h"}
    add2 = {"source": "/data/two"}
    first = [NameRecord("lake", f"d/{i:03d}", _d(f"c{i}"), i + 1, T1, "ann", add1) for i in range(0, 40)] + [
        NameRecord("lake", "local/same", _d("same"), 4, T1, "ann", add1)
    ]
    second = [
        NameRecord("lake", f"d/{i:03d}", _d(f"c{i}"), i + 1, T1, "ann", add1) for i in range(40, 60)
    ] + [
        NameRecord("lake", "d/000", _d("other"), 5, T2, "bob", add2),  # refused: bound to c0
        NameRecord("lake", "d/001", _d("c1"), 2, T2, "bob", add2),  # the same binding again
        NameRecord("lake", "d/002", _d("c2"), 3, T2, "bob", add2, GONE),  # its tombstone
        NameRecord("lake", "local/other", _d("remote's"), 8, T2, "bob", add2),
        NameRecord("other-scope", "x", _d("x"), 1, T2, "bob", add2),
    ]
    return [first, second]


PACKS = [
    [Pack(_d("pack1"), (Member(_d("c1"), 0, 2), Member(_d("c3"), 2, 4)))],
    [Pack(_d("pack2"), (Member(_d("c3"), 0, 4),))],
]
SWEEPS = [[Sweep(7, ("packs/a", "objects/b"))], [Sweep(7, done_at=9), Sweep(11, ("packs/c",))]]


def _pieces(fail_after: int | None = None) -> Iterator[SnapshotPiece]:
    numbers: dict[tuple[str, str, str], int] = {}
    for i, records in enumerate(_snapshot()):
        if fail_after == i:
            raise CorruptRecordError("snapshot 12, line 3: not a record")
        shared = []
        for r in records:
            key = (r.created_at, r.creator, json.dumps(r.meta, sort_keys=True, separators=(",", ":")))
            if key not in numbers:
                numbers[key] = len(numbers) + 1
                shared.append((numbers[key], *key))
        yield SnapshotPiece(
            shared=shared,
            scopes=[r.scope for r in records],
            names=[r.name for r in records],
            digests=[digest_blob(r.digest) for r in records],
            sizes=[r.size for r in records],
            batches=[
                numbers[(r.created_at, r.creator, json.dumps(r.meta, sort_keys=True, separators=(",", ":")))]
                for r in records
            ],
            removed_at=[r.removed_at for r in records],
            packs=[
                PackMembers(
                    p.digest,
                    [digest_blob(m.digest) for m in p.members],
                    [m.offset for m in p.members],
                    [m.size for m in p.members],
                )
                for p in PACKS[i]
            ],
            sweeps=SWEEPS[i],
        )


def _state(catalog: Catalog) -> dict[str, object]:
    """Everything the index says, by what it means (row ids aside)."""
    scopes = sorted({"lake", "other-scope", *catalog.scopes()})
    return {
        "records": {s: [r for r in catalog.iter_records(s, include_removed=True)] for s in scopes},
        "remote": {s: catalog.remote_digests(s) for s in scopes},
        "remote records": {s: list(catalog.remote_records(s)) for s in scopes},
        "unpushed": {s: catalog.not_on_remote(s) for s in scopes},
        "differs": {s: catalog.remote_differs(s) for s in scopes},
        "bindings": catalog.remote_bindings("lake", ["d/000", "d/002", "local/same", "local/other"]),
        "packs": sorted(catalog.packs(), key=lambda p: p.digest),
        "located": catalog.pack_locations([_d("c1"), _d("c3")]),
        "sweeps": catalog.open_sweeps(),
        "swept": catalog.swept(["packs/a", "packs/c", "objects/b"], since=8),
        "log_seq": catalog.get_state("log_seq"),
        "by digest": list(catalog.with_digests("lake", [_d("c5"), _d("same")])),
    }


def _catalog(path: Path, local: bool) -> Catalog:
    catalog = Catalog(path)
    if local:  # names this machine bound before its first sync: one as the remote does, one not
        catalog.upsert(
            [
                NameRecord("lake", "local/same", _d("same"), 4, T1, "me", {}),
                NameRecord("lake", "local/other", _d("mine"), 4, T1, "me", {}),
                NameRecord("lake", "local/only", _d("only"), 4, T1, "me", {}),
            ]
        )
    return catalog


@pytest.mark.parametrize("local", [False, True], ids=["empty index", "with local names"])
def test_a_snapshot_loaded_in_bulk_is_the_state_its_records_applied_one_by_one_give(tmp_path, local) -> None:
    applied = _catalog(tmp_path / "applied.sqlite", local)
    with applied.applying_remote() as apply:
        for records, packs, sweeps in zip(_snapshot(), PACKS, SWEEPS, strict=True):
            apply(12, records, packs, sweeps)
    loaded = _catalog(tmp_path / "loaded.sqlite", local)

    assert loaded.load_snapshot(12, _pieces()) == sum(map(len, _snapshot()))

    assert _state(loaded) == _state(applied)
    state = _state(loaded)
    assert state["bindings"]["d/000"] == (_d("c0"), False) and state["bindings"]["d/002"] == (_d("c2"), True)
    assert len(state["records"]["lake"]) == 60 + (3 if local else 2)
    if local:
        assert [r.name for r in state["unpushed"]["lake"]] == ["local/only", "local/other"]
        assert state["remote"]["lake"]["local/other"] == _d("remote's") and state["differs"]["lake"]
    # and the log applied on top of it goes on as it would
    for catalog in (loaded, applied):
        catalog.apply_remote(13, [NameRecord("lake", "d/900", _d("new"), 1, T2, "bob", {})], [])
    assert _state(loaded) == _state(applied)


def test_a_bad_piece_rolls_the_whole_load_back(tmp_path) -> None:
    catalog = _catalog(tmp_path / "index.sqlite", local=True)
    before = _state(catalog)
    with pytest.raises(CorruptRecordError):
        catalog.load_snapshot(12, _pieces(fail_after=1))
    assert _state(catalog) == before and catalog.get_state("log_seq") is None
    assert catalog.load_snapshot(12, _pieces()) == sum(map(len, _snapshot()))  # and loads after


# --- an index of schema 5, as the lakelet before schema 6 left it ---------------------------


def _text(blob: bytes) -> str:
    return f"{('blake3', 'sha256')[blob[0] - 1]}:{blob[1:].hex()}"


def _path(key: bytes | str) -> str:
    if isinstance(key, str):
        return key
    algorithm, hexdigest = _text(key).split(":")
    return f"objects/{algorithm}/{hexdigest[:2]}/{hexdigest[2:]}"


# what a lakelet of index schema 6 made of the tables of schema 7: every pack location in
# packed, by digest, and the digest index on the whole digest
BACK_TO_SCHEMA_6 = """
DROP INDEX names_by_digest;
INSERT OR REPLACE INTO packed SELECT digest, pack, offset, size FROM name_rows WHERE pack IS NOT NULL;
ALTER TABLE name_rows DROP COLUMN pack;
ALTER TABLE name_rows DROP COLUMN offset;
CREATE INDEX names_by_digest ON name_rows (digest);
CREATE INDEX packed_by_pack ON packed (pack);
PRAGMA user_version = 6;
"""


def back_to_schema_6(root: Path) -> None:
    db = sqlite3.connect(root / "index.sqlite")
    db.executescript(BACK_TO_SCHEMA_6)
    db.close()


# what a lakelet of index schema 5 made of the tables of schema 6 (digests as text, scopes by
# name, what the remote binds in on_remote)
BACK_TO_SCHEMA_5 = """
DROP VIEW names;
CREATE TABLE name_rows5 (scope TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL, size INTEGER NOT NULL,
    batch INTEGER NOT NULL, removed_at TEXT, PRIMARY KEY (scope, name)) WITHOUT ROWID;
INSERT INTO name_rows5 SELECT s.name, n.name, text_of(n.digest), n.size, n.batch, n.removed_at
    FROM name_rows n JOIN scopes s ON s.id = n.scope;
CREATE TABLE on_remote (scope TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL,
    PRIMARY KEY (scope, name)) WITHOUT ROWID;
INSERT INTO on_remote SELECT s.name, n.name, text_of(n.digest) FROM name_rows n
    JOIN scopes s ON s.id = n.scope WHERE n.remote
    UNION ALL SELECT s.name, o.name, text_of(o.digest) FROM remote_other o
    JOIN scopes s ON s.id = o.scope;
DROP TABLE name_rows; DROP TABLE remote_other; DROP TABLE scopes;
ALTER TABLE name_rows5 RENAME TO name_rows;
CREATE INDEX names_by_digest ON name_rows (digest);
CREATE VIEW names AS SELECT n.scope, n.name, n.digest, n.size, b.created_at, b.creator,
    b.meta, n.removed_at FROM name_rows n JOIN batches b ON b.id = n.batch;
CREATE TABLE packs5 (id INTEGER PRIMARY KEY, digest TEXT NOT NULL UNIQUE);
INSERT INTO packs5 SELECT id, text_of(digest) FROM packs;
CREATE TABLE packed5 (digest TEXT PRIMARY KEY, pack INTEGER NOT NULL, offset INTEGER NOT NULL,
    size INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO packed5 SELECT text_of(digest), pack, offset, size FROM packed;
DROP TABLE packed; DROP TABLE packs;
ALTER TABLE packs5 RENAME TO packs; ALTER TABLE packed5 RENAME TO packed;
CREATE INDEX packed_by_pack ON packed (pack);
CREATE TABLE verified5 (key TEXT PRIMARY KEY, ino INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO verified5 SELECT path_of(key), ino, size, mtime_ns, ctime_ns FROM verified;
DROP TABLE verified; ALTER TABLE verified5 RENAME TO verified;
PRAGMA user_version = 5;
"""


def back_to_schema_5(root: Path) -> None:
    back_to_schema_6(root)
    db = sqlite3.connect(root / "index.sqlite")
    db.create_function("text_of", 1, _text)
    db.create_function("path_of", 1, _path)
    db.executescript(BACK_TO_SCHEMA_5)
    db.close()


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_an_index_of_schema_5_is_upgraded_in_place_and_lists_syncs_and_fetches(machine, make_file) -> None:
    a = machine("a")
    a.add(make_file("d/1.txt", "one").parent, "d")
    make_file("e/3.txt", "three")
    a.add(make_file("e/2.txt", "two").parent, "e")  # two small files: one pack
    b = machine("b", upload="deferred")
    b.sync()
    b.add(make_file("mine.txt", "mine"), "mine.txt")  # not pushed yet
    big = b.add(make_file("big.bin", b"x" * (3 << 20)), "big.bin")  # a fingerprinted blob
    big.read_bytes()
    before = {f.name: (f.digest, f.meta, f.created_at) for f in b.ls()}
    status = b.status()
    b.context.catalog.close()
    back_to_schema_5(b.root)

    # b learned d/ and e/ from the remote and holds no record of them: rebuilt from its
    # records, its index would list none of them until the next sync
    b = lakelet.open(b.root)
    assert {f.name: (f.digest, f.meta, f.created_at) for f in b.ls()} == before
    assert b.status() == status and status["unpushed"] == 2
    assert b.file("e/2.txt").read_bytes() == b"two"  # fetched from its pack, as the index placed it
    assert b.file("big.bin").read_bytes() == b"x" * (3 << 20)
    a.add(make_file("f.txt", "four"), "f.txt")
    assert b.sync().pushed.names == 2 and b.status()["unpushed"] == 0
    assert b.file("f.txt").read_text() == "four"  # learned from the log on the way
    assert machine("c").sync().new_names == 6 and b.fsck().ok
    with sqlite3.connect(b.root / "index.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 7


def _with_digest(lake: lakelet.Lake, blob: object) -> lakelet.Lake:
    """``lake`` reopened after every row of its index was given ``blob`` as its digest."""
    lake.close()
    with sqlite3.connect(lake.root / "index.sqlite") as db:
        db.execute("UPDATE name_rows SET digest = ?", (blob,))
    return lakelet.open(lake.root)


@pytest.mark.parametrize("blob", [b"\x09" + bytes(32), b"\x01short", "blake3:not a blob"])
def test_a_digest_in_the_index_no_lakelet_wrote_is_one_error_until_fsck_rebuilds_it(
    lake, make_file, blob
) -> None:
    lake.add(make_file("a.txt", "alpha"), "a.txt")
    damaged = _with_digest(lake, blob)
    with pytest.raises(lakelet.StorageError, match="damaged digest: run `lakelet fsck`"):
        damaged.ls()
    assert damaged.fsck().names_indexed == 1
    assert [f.name for f in damaged.ls()] == ["a.txt"] and damaged.file("a.txt").read_text() == "alpha"


def test_a_piece_naming_a_batch_no_piece_gave_is_corrupt_and_loads_nothing(tmp_path) -> None:
    catalog = _catalog(tmp_path / "index.sqlite", local=False)
    first, second = _pieces()
    orphan = SnapshotPiece(**{**vars(second), "shared": [], "batches": [99] * len(second.names)})
    with pytest.raises(CorruptRecordError, match="refers to no batch"):
        catalog.load_snapshot(12, [first, orphan])
    assert catalog.records("lake") == [] and catalog.get_state("log_seq") is None


# --- schema 7: a pack member's location on its name's row, the digest index on a prefix ------


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_an_index_of_schema_6_is_upgraded_in_place_and_fetches_from_packs_and_collects(
    machine, make_file, tmp_path
) -> None:
    a = machine("a")
    make_file("e/3.txt", "three")
    a.add(make_file("e/2.txt", "two").parent, "e")  # two small files: one pack
    b = machine("b")
    b.sync()
    before = {f.name: f.digest for f in b.ls()}
    b.context.catalog.close()
    back_to_schema_6(b.root)

    b = lakelet.open(b.root)
    assert {f.name: f.digest for f in b.ls()} == before
    assert b.file("e/2.txt").read_bytes() == b"two"  # fetched from its pack, as the index placed it
    with sqlite3.connect(b.root / "index.sqlite") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 7
        located = db.execute("SELECT count(*) FROM name_rows WHERE pack IS NOT NULL").fetchone()[0]
        assert located == 2 and db.execute("SELECT count(*) FROM packed").fetchone()[0] == 0
    (pack,) = (tmp_path / "remote" / "packs").rglob("*.pack")
    os.utime(pack, (1, 1))  # old enough for gc: only its members, held by names, keep it
    assert b.gc(remote=True).remote_objects == [] and pack.exists()


def _forged(prefix_of: str, tail: str) -> str:
    """A digest sharing the first 8 bytes of ``prefix_of`` (what a hostile peer can make)."""
    return prefix_of[: len("blake3:") + 16] + tail * 48


def test_digests_that_share_the_index_prefix_find_each_its_own_names_and_pack_location(tmp_path) -> None:
    catalog = Catalog(tmp_path / "index.sqlite")
    one = _d("one")
    two, three = _forged(one, "a"), _forged(one, "b")
    records = [
        NameRecord("lake", "one", one, 3, T1, "ann", {}),
        NameRecord("lake", "two", two, 3, T1, "ann", {}),
        NameRecord("lake", "three", three, 5, T1, "ann", {}),
    ]
    packs = [Pack(_d("pack"), (Member(one, 0, 3), Member(two, 3, 3), Member(_forged(one, "c"), 6, 2)))]
    catalog.apply_remote(1, records, packs)

    assert catalog.pack_locations([one, two, three]) == {
        one: (_d("pack"), Member(one, 0, 3)),
        two: (_d("pack"), Member(two, 3, 3)),
    }
    assert [r.name for r in catalog.with_digests("lake", [two])] == ["two"]
    assert catalog.first_with_digest("lake", three).name == "three"
    assert sorted(catalog.live_holders("lake", [one, three])) == sorted([(one, "one"), (three, "three")])
    assert catalog.pack_members([_d("pack")]) == {_d("pack"): sorted([one, two, _forged(one, "c")])}


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_a_damaged_pack_location_in_the_index_is_one_error(machine, make_file) -> None:
    a = machine("a")
    make_file("e/3.txt", "three")
    a.add(make_file("e/2.txt", "two").parent, "e")
    b = machine("b")
    b.sync()
    b.context.catalog.close()
    with sqlite3.connect(b.root / "index.sqlite") as db:
        for table in ("name_rows", "packed"):  # wherever this schema keeps it
            with contextlib.suppress(sqlite3.OperationalError):
                db.execute(f"UPDATE {table} SET offset = 'x' WHERE offset IS NOT NULL")
    b = lakelet.open(b.root)
    with pytest.raises(lakelet.StorageError, match="damaged pack location: run `lakelet fsck`"):
        b.file("e/2.txt").read_bytes()
    assert not (b.root / "objects").exists() or not any((b.root / "objects").rglob("*"))
    assert b.fsck().index_set_aside  # what it learned from the remote is learned again
    assert b.file("e/2.txt").read_text() == "two" and b.file("e/3.txt").read_text() == "three"


@pytest.mark.parametrize("remote", ["file"], indirect=True)
@pytest.mark.parametrize("blob", [b"\x09" + bytes(32), b"\x01short", "blake3:not a blob"])
def test_a_damaged_digest_of_a_name_learned_from_the_remote_is_learned_again_by_fsck(
    machine, make_file, blob
) -> None:
    """A name this machine only learned from the remote has no local record to rebuild its row
    from: fsck, which the error names, sets the index aside and reads the remote again."""
    machine("a").add(make_file("a.txt", "alpha"), "a.txt")
    b = machine("b")
    b.sync()
    b = _with_digest(b, blob)
    with pytest.raises(lakelet.StorageError, match="damaged digest: run `lakelet fsck`"):
        b.ls()
    assert b.fsck().index_set_aside
    assert [f.name for f in b.ls()] == ["a.txt"] and b.file("a.txt").read_text() == "alpha"


N_SMALL = 20_000  # names of 21 characters, as bench/scale.py makes them; small files in packs


def _packed_lake() -> tuple[list[str], list[str], Pack]:
    """The names, their digests and the one pack holding them all."""
    names = [f"d{i // 1000:05d}/f{i:09d}.bin" for i in range(N_SMALL)]
    digests = [_d(name) for name in names]
    return names, digests, Pack(_d("the pack"), tuple(Member(d, 21 * i, 21) for i, d in enumerate(digests)))


def _located_snapshot() -> Iterator[SnapshotPiece]:
    names, digests, pack = _packed_lake()
    yield SnapshotPiece([(1, T1, "ann", '{"source":"/data"}')], [], [], [], [], [], [], [], [])
    yield SnapshotPiece(
        [],
        ["lake"] * N_SMALL,
        names,
        [digest_blob(d) for d in digests],
        [21] * N_SMALL,
        [1] * N_SMALL,
        [None] * N_SMALL,
        [],
        [],
        [(pack.digest, m.offset) for m in pack.members],
    )


@pytest.mark.parametrize("how", ["snapshot", "log"])
def test_the_index_holds_a_packed_name_in_at_most_150_bytes(tmp_path, how) -> None:
    """Issue 19's bound for the index, at a small size (bytes a name barely depend on it):
    a first sync from a snapshot that places names in their pack, and the log applied."""
    catalog = Catalog(tmp_path / "index.sqlite")
    if how == "snapshot":
        catalog.load_snapshot(1, _located_snapshot())
    else:
        names, digests, pack = _packed_lake()
        records = [
            NameRecord("lake", n, d, 21, T1, "ann", {"source": "/data"})
            for n, d in zip(names, digests, strict=True)
        ]
        catalog.apply_remote(1, records, [pack])
    assert catalog.pack_locations([_d("d00007/f000007000.bin")]) == {
        _d("d00007/f000007000.bin"): (_d("the pack"), Member(_d("d00007/f000007000.bin"), 21 * 7000, 21))
    }
    catalog.close()
    with sqlite3.connect(tmp_path / "index.sqlite") as db:
        db.execute("VACUUM")  # (pages as a long-lived index packs them; no free pages)
        used = sum(size for (size,) in db.execute("SELECT pgsize FROM dbstat"))
    assert used / N_SMALL <= 150, used / N_SMALL
