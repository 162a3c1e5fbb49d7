"""The compact remote format 3 (docs/remote-layout.md): compressed log entries with the facts of a
batch written once, Parquet snapshots loaded in bulk (``Catalog.load_snapshot``), format-2
remotes still read and written until ``lakelet remote upgrade``.
"""

from __future__ import annotations

import json
import sqlite3

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakelet.catalog._schema import digest_blob
from lakelet.core._digest import digest_bytes
from lakelet.core.errors import NameExistsError
from lakelet.remote import _sync
from lakelet.remote._log import Log
from lakelet.remote._remote import Remote
from lakelet.remote._snapshot import read_snapshot
from lakelet.storage._packs import Member, Pack
from lakelet.storage._refs import NameRecord

from .conftest import run_lakelet

WHEN = "2026-12-01T00:00:00.000000Z"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _fs(remote):
    fs, root = fsspec.core.url_to_fs(
        remote.url, skip_instance_cache=True, use_listings_cache=False, **remote.storage_options
    )
    return fs, root.rstrip("/")


def _entry(fs, root: str, seq: int) -> bytes:
    return fs.cat_file(f"{root}/log/{seq // 1000:09d}/{seq:012d}.jsonl")


def _unzstd(body: bytes) -> bytes:
    return pa.CompressedInputStream(pa.BufferReader(body), "zstd").read()


@pytest.mark.parametrize("remote", ["file", "s3"], indirect=True)
def test_a_new_remote_writes_the_compact_log(remote, machine, make_file, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_sync, "SNAPSHOT_EVERY", 2)
    a = machine("a")
    fs, root = _fs(remote)
    assert json.loads(fs.cat_file(f"{root}/lakelet-remote.json"))["format"] == 3
    for i in range(3):
        make_file(f"dir/{i}.txt", f"file {i}")
    a.add(tmp_path / "src" / "dir", "dir")  # entry 1: a pack line, one batch line, three records
    body = _entry(fs, root, 1)
    assert body.startswith(ZSTD_MAGIC)
    lines = [json.loads(line) for line in _unzstd(body).splitlines()]
    assert [next(iter(line)) for line in lines] == ["members", "batch", "digest", "digest", "digest"]
    assert lines[1]["batch"]["meta"]["source"].endswith("dir") and set(lines[2]) == {"name", "digest", "size"}
    a.add(make_file("x.txt", "x"), "x.txt")
    a.rm("x.txt", force=True)  # entry 3: a tombstone, a short line with removed_at
    assert "removed_at" in _unzstd(_entry(fs, root, 3)).splitlines()[-1].decode()
    a.sync()  # 3 entries since none: a snapshot, in Parquet shards
    assert fs.exists(f"{root}/snapshots/000000000003/manifest.json")

    b = machine("b")  # a new machine: the snapshot, loaded in bulk
    report = b.sync()
    assert report.problems == [] and report.entries_read == 0
    assert {f.name: f.read_bytes() for f in b.pull()} == {
        f"dir/{i}.txt": f"file {i}".encode() for i in range(3)
    }
    assert b.file("dir/1.txt").creator == a.file("dir/1.txt").creator
    assert b.file("dir/1.txt").meta == a.file("dir/1.txt").meta
    b.add(make_file("later.txt", "later"), "later.txt")
    with pytest.raises(NameExistsError):
        b.add(make_file("x2.txt", "other"), "x.txt")  # removed: never rebound
    assert a.sync().new_names == 1 and a.file("later.txt").read_text() == "later"


@pytest.mark.parametrize("remote", ["file", "s3"], indirect=True)
def test_a_format_2_remote_is_read_written_and_upgraded(remote, machine, make_file, monkeypatch) -> None:
    monkeypatch.setattr(_sync, "SNAPSHOT_EVERY", 2)
    fs, root = _fs(remote)
    if remote.kind == "file":
        fs.makedirs(root, exist_ok=True)
    fs.pipe_file(f"{root}/lakelet-remote.json", json.dumps({"format": 2}).encode())  # an old remote
    a = machine("a")
    a.add(make_file("one.txt", "one"), "one.txt")
    a.add(make_file("two.txt", "two"), "two.txt")
    assert json.loads(_entry(fs, root, 1))["name"] == "one.txt"  # format 2: plain JSON lines
    a.sync()
    assert fs.exists(f"{root}/snapshots/000000000002.jsonl.gz")  # format 2's snapshot

    out = run_lakelet("remote", "upgrade", env={**remote.env, "LAKELET_HOME": str(a.root)})
    assert out.returncode == 0, out.stderr
    assert b"now of format 3" in out.stdout
    assert json.loads(fs.cat_file(f"{root}/lakelet-remote.json"))["format"] == 3
    a = machine("a2")  # (a process that reads the marker again)
    a.add(make_file("three.txt", "three"), "three.txt")  # entry 3: format 3, after two of format 2
    assert _entry(fs, root, 3).startswith(ZSTD_MAGIC)

    b = machine("b")  # format 2's snapshot, then a format-3 entry
    report = b.sync()
    assert report.problems == [] and report.entries_read == 1
    assert {f.name: f.read_bytes() for f in b.pull()} == {
        "one.txt": b"one",
        "two.txt": b"two",
        "three.txt": b"three",
    }
    b.add(make_file("four.txt", "four"), "four.txt")
    b.sync()  # 2 entries since the last snapshot: a format-3 one
    assert fs.exists(f"{root}/snapshots/000000000004/manifest.json")
    c = machine("c")
    assert c.sync().problems == [] and len(c.ls()) == 4
    out = run_lakelet("remote", "upgrade", env={**remote.env, "LAKELET_HOME": str(c.root)})
    assert out.returncode == 0 and b"already of format 3" in out.stdout


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_a_snapshot_whose_writer_died_before_its_manifest_is_taken_again(
    remote, machine, make_file, monkeypatch
):
    """A writer killed while sending a snapshot's shards leaves a folder with no manifest:
    readers skip it, and the next machine past it writes the snapshot (it used to count it,
    so no snapshot was taken until another SNAPSHOT_EVERY entries)."""
    monkeypatch.setattr(_sync, "SNAPSHOT_EVERY", 2)
    a = machine("a")
    fs, root = _fs(remote)
    for i in range(3):
        a.add(make_file(f"{i}.txt", f"file {i}"), f"{i}.txt")
    fs.makedirs(f"{root}/snapshots/000000000003", exist_ok=True)
    fs.pipe_file(f"{root}/snapshots/000000000003/names-000000.parquet", b"PAR1 cut short")
    a.sync()
    assert fs.exists(f"{root}/snapshots/000000000003/manifest.json")
    report = machine("b").sync()
    assert report.problems == [] and report.entries_read == 0 and report.new_names == 3


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_a_snapshot_places_each_packed_name_in_its_row_and_a_new_machine_keeps_it_there(
    remote, machine, make_file, tmp_path, monkeypatch
) -> None:
    """A names row gives its content's pack and offset: no member row repeats the digest
    (docs/remote-layout.md, "Snapshots (format 3)"), and the new machine's index holds the
    location on the name's row, not in a table keyed by the digest again."""
    monkeypatch.setattr(_sync, "SNAPSHOT_EVERY", 1)
    a = machine("a")
    for i in range(3):
        make_file(f"dir/{i}.txt", f"file {i}")
    a.add(tmp_path / "src" / "dir", "dir")  # one pack of three
    a.add(make_file("alone.bin", b"x" * (3 << 20)), "alone.bin")  # too big for a pack: loose
    a.sync()
    fs, root = _fs(remote)
    folder = f"{root}/snapshots/000000000002"
    manifest = json.loads(fs.cat_file(f"{folder}/manifest.json"))
    assert manifest["located"] is True and manifest["packs"] == []  # every member is a name's
    names = pq.read_table(fs.open(f"{folder}/{manifest['names'][0]['key']}")).to_pydict()
    assert [p is not None for p in names["pack"]] == [False, True, True, True]  # alone.bin, dir/*
    assert len(set(names["pack"][1:])) == 1 and sorted(names["offset"][1:]) == [0, 6, 12]

    b = machine("b")
    assert b.sync().problems == []
    assert {f.name: f.read_bytes() for f in b.pull()} == {
        **{f"dir/{i}.txt": f"file {i}".encode() for i in range(3)},
        "alone.bin": b"x" * (3 << 20),
    }
    with sqlite3.connect(b.root / "index.sqlite") as db:
        assert db.execute("SELECT count(*) FROM name_rows WHERE pack IS NOT NULL").fetchone()[0] == 3
        assert db.execute("SELECT count(*) FROM packed").fetchone()[0] == 0


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_a_snapshot_of_both_digest_algorithms_reads_back_as_the_index_stores_them(
    remote, tmp_path, monkeypatch
) -> None:
    """The reader hands the index 33-byte digests (no text made to be parsed back), a piece of
    LAKELET_BATCH rows at a time (a slice of a row group), whichever algorithm each row names."""
    monkeypatch.setenv("LAKELET_BATCH", "3")
    store = Remote(remote.url)
    store.check_format(create=True)
    digests = [str(digest_bytes(b"%d" % i, "sha256" if i % 3 else "blake3")) for i in range(8)]
    records = [NameRecord("lake", f"n/{i}", d, 1, WHEN, "ann", {}) for i, d in enumerate(digests)]
    # members no name holds: a located snapshot lists only those in its packs shards
    held_apart = [str(digest_bytes(b"o%d" % i, "blake3" if i % 2 else "sha256")) for i in range(5)]
    pack = Pack(str(digest_bytes(b"pack")), tuple(Member(d, i, 1) for i, d in enumerate(held_apart)))
    Log(store).write_snapshot(8, [(r, None) for r in records], [pack], tmp=tmp_path)  # row groups of 3
    monkeypatch.setenv("LAKELET_BATCH", "2")  # read in slices of 2: a slice may start mid-group

    pieces = list(read_snapshot(store, 8, tmp_path))

    assert [d for p in pieces for d in p.digests] == [digest_blob(d) for d in digests]
    assert {p.pack for piece in pieces for p in piece.packs} == {pack.digest}
    members = [
        m for piece in pieces for p in piece.packs for m in zip(p.digests, p.offsets, p.sizes, strict=True)
    ]
    assert members == [(digest_blob(m.digest), m.offset, m.size) for m in pack.members]
    assert [len(p.names) for p in pieces if p.names] == [2, 1, 2, 1, 2]


def _prefixed_lake(machine, make_file, tmp_path, monkeypatch):
    """A remote whose snapshot holds raw/, other/ and zzz/ in names shards of 2 names, and one
    name bound after it (tail/x.txt). Returns (the names, the snapshot's folder)."""
    from lakelet.remote import _snapshot

    monkeypatch.setattr(_sync, "SNAPSHOT_EVERY", 1)
    monkeypatch.setattr(_snapshot, "_SHARD_ROWS", 2)
    monkeypatch.setenv("LAKELET_BATCH", "2")
    a = machine("a")
    for top in ("raw", "other", "zzz"):
        for i in range(3):
            make_file(f"{top}/{i}.txt", f"{top} {i}")
        a.add(tmp_path / "src" / top, top)
    a.sync()  # the snapshot, after entry 3
    a.add(make_file("x.txt", "tail"), "tail/x.txt")
    names = sorted([f"{top}/{i}.txt" for top in ("raw", "other", "zzz") for i in range(3)] + ["tail/x.txt"])
    return names, "snapshots/000000000003"


@pytest.mark.parametrize("remote", ["file", "s3"], indirect=True)
def test_a_sync_of_one_prefix_reads_only_the_shards_that_hold_it(
    remote, machine, make_file, tmp_path, monkeypatch
) -> None:
    names, folder = _prefixed_lake(machine, make_file, tmp_path, monkeypatch)
    fs, root = _fs(remote)
    manifest = json.loads(fs.cat_file(f"{root}/{folder}/manifest.json"))
    assert len(manifest["names"]) == 5  # 9 names, 2 a shard
    for shard in manifest["names"]:  # the shards no name under other/ is in: gone, unread
        if shard["last"] < "other/" or shard["first"] > "other0":  # ('0' sorts right after '/')
            fs.rm_file(f"{root}/{folder}/{shard['key']}")

    b = machine("b")
    assert b.sync(prefix="other/").problems == []
    assert [f.name for f in b.ls()] == ["other/0.txt", "other/1.txt", "other/2.txt", "tail/x.txt"]
    assert b.status()["synced_only"] == "other/" and b.file("other/1.txt").read_text() == "other 1"
    listed = run_lakelet("ls", env={**remote.env, "LAKELET_HOME": str(b.root)})
    assert b"synced only the names under 'other/'" in listed.stderr


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_whatever_needs_the_other_names_learns_them_first(
    remote, machine, make_file, tmp_path, monkeypatch
) -> None:
    """A bind checked against part of the names could bind one bound elsewhere; a remote gc
    would delete the packs the names it does not know still need; a look-up would say absent."""
    names, _ = _prefixed_lake(machine, make_file, tmp_path, monkeypatch)
    binder = machine("binder")
    binder.sync(prefix="other/")
    binder.user.puts("notes/a.txt", b"mine")  # another scope: learning the lake again keeps it
    with pytest.raises(NameExistsError):
        binder.add(b"other content", "raw/1.txt")
    assert [f.name for f in binder.ls()] == names and binder.status()["synced_only"] is None
    assert binder.user.list("notes/") == ["notes/a.txt"] and binder.user.gets("notes/a.txt") == b"mine"

    reader = machine("reader")
    reader.sync(prefix="other/")
    assert reader.file("zzz/2.txt").read_text() == "zzz 2"  # looked up: everything learned
    assert reader.status()["synced_only"] is None

    collector = machine("collector")
    collector.sync(prefix="other/")
    assert collector.gc(remote=True).remote_objects == []
    fresh = machine("fresh")
    fresh.sync()
    assert {f.name: f.read_text() for f in fresh.pull()} == {
        n: ("tail" if n == "tail/x.txt" else n.replace("/", " ").removesuffix(".txt")) for n in names
    }


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_a_manifest_that_lies_about_a_range_only_makes_a_prefix_sync_miss_names(
    remote, machine, make_file, tmp_path, monkeypatch
) -> None:
    """A peer's manifest gives the shards holding other/ a range elsewhere: the prefix sync
    skips them, and the first look-up learns everything (the forged snapshot is then refused
    whole, for the names outside its range, and the log read instead)."""
    names, folder = _prefixed_lake(machine, make_file, tmp_path, monkeypatch)
    fs, root = _fs(remote)
    manifest = json.loads(fs.cat_file(f"{root}/{folder}/manifest.json"))
    for shard in manifest["names"]:
        if shard["first"] <= "other0" and shard["last"] >= "other/":
            shard["first"], shard["last"] = "zzz/9", "zzz/99"
    fs.pipe_file(f"{root}/{folder}/manifest.json", json.dumps(manifest).encode())

    b = machine("b")
    b.sync(prefix="other/")
    assert [f.name for f in b.ls()] == ["tail/x.txt"]  # missed, not wrong
    assert b.file("other/1.txt").read_text() == "other 1"
    assert [f.name for f in b.ls()] == names and b.status()["synced_only"] is None
