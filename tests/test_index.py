"""The index (schema 6): a snapshot bulk-loaded gives exactly the state its records applied one
by one give, all or nothing; an index of schema 5 left by an older lakelet is upgraded in
place and goes on listing, syncing and fetching."""

from __future__ import annotations

import json
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
        assert db.execute("PRAGMA user_version").fetchone()[0] == 6


@pytest.mark.parametrize("blob", [b"\x09" + bytes(32), b"\x01short", "blake3:not a blob"])
def test_a_digest_in_the_index_no_lakelet_wrote_is_one_error_until_fsck_rebuilds_it(
    lake, make_file, blob
) -> None:
    lake.add(make_file("a.txt", "alpha"), "a.txt")
    lake.close()
    with sqlite3.connect(lake.root / "index.sqlite") as db:
        db.execute("UPDATE name_rows SET digest = ?", (blob,))
    damaged = lakelet.open(lake.root)
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
