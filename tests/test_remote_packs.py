"""Small files travel in packs: push, pull, lazy fetch, corruption, URLs, evict and gc of packed
objects, on every kind of store (file://, S3, Azure, GCS servers)."""

from __future__ import annotations

import json
import os
import urllib.request
from datetime import timedelta
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

import lakelet
from lakelet.lake._gc import _expired

from .conftest import run_lakelet


def _fs(remote):
    fs, root = fsspec.core.url_to_fs(remote.url, **remote.storage_options)
    return fs, root.rstrip("/")


def _keys(remote, folder: str) -> list[str]:
    fs, root = _fs(remote)
    return [k.removeprefix(fs._strip_protocol(root) + "/") for k in fs.find(f"{root}/{folder}")]


def _pack_lines(remote) -> list[dict]:
    """The pack lines of every log entry, read as docs/remote-layout.md describes them."""
    fs, root = _fs(remote)
    bodies = [_unzstd(fs.cat_file(key)) for key in sorted(fs.find(f"{root}/log"))]
    lines = [json.loads(line) for body in bodies for line in body.splitlines()]
    return [line for line in lines if "pack" in line]


def _unzstd(body: bytes) -> bytes:
    """An entry's lines: format 3 compresses them with zstd (its magic number first)."""
    if not body.startswith(b"\x28\xb5\x2f\xfd"):
        return body
    return pa.CompressedInputStream(pa.BufferReader(body), "zstd").read()


def _small_files(make_file, n: int, folder: str = "small") -> dict[str, bytes]:
    contents = {f"{i:03d}.bin": os.urandom(4096) for i in range(n)}
    for name, data in contents.items():
        make_file(f"{folder}/{name}", data)
    return contents


def test_small_files_are_pushed_in_packs_and_pulled_elsewhere(remote, machine, make_file, tmp_path) -> None:
    a, b = machine("a", upload="deferred"), machine("b")
    contents = _small_files(make_file, 300)
    a.add(make_file("big.bin", os.urandom(2 << 20)), "big.bin")  # above the member limit: alone
    a.add(tmp_path / "src" / "small", "small")
    report = a.push()
    assert (report.names, report.objects, report.conflicts) == (301, 301, [])
    assert len(_keys(remote, "objects")) == 1  # the big file; 300 small ones in one pack
    assert len(_keys(remote, "packs")) == 1 and len(_keys(remote, "log")) == 1
    (line,) = _pack_lines(remote)
    assert len(line["members"]) == 300

    pulled = b.pull(prefix="small/")
    assert len(pulled) == 300
    assert all(f.is_local and f.read_bytes() == contents[f.name.removeprefix("small/")] for f in pulled)
    assert not b.file("big.bin").is_local  # only what was asked for


def test_one_packed_file_is_fetched_alone(remote, machine, make_file, tmp_path) -> None:
    a, b = machine("a"), machine("b")
    contents = _small_files(make_file, 40)
    a.add(tmp_path / "src" / "small", "small")  # write-through: one pack, one log entry
    f = b.file("small/017.bin")  # b never synced: the name is found in the log
    assert not f.is_local and f.read_bytes() == contents["017.bin"]
    local = [p for p in (b.root / "objects").rglob("*") if p.is_file()]
    assert len(local) == 1 and local[0].stat().st_size == 4096  # the member, not the pack


def test_a_corrupt_pack_member_is_detected_and_never_cached(remote, machine, make_file, tmp_path) -> None:
    a, b = machine("a"), machine("b")
    contents = _small_files(make_file, 10)
    a.add(tmp_path / "src" / "small", "small")
    victim = a.file("small/003.bin").digest
    (line,) = _pack_lines(remote)
    (offset, size) = next((o, s) for d, o, s in line["members"] if d == victim)
    fs, root = _fs(remote)
    algorithm, hexdigest = line["pack"].split(":")
    key = f"{root}/packs/{algorithm}/{hexdigest[:2]}/{hexdigest[2:]}.pack"
    body = bytearray(fs.cat_file(key))
    body[offset + 100] ^= 0xFF  # one flipped byte inside one member; the pack keeps its length
    fs.pipe_file(key, bytes(body))

    with pytest.raises(lakelet.IntegrityError, match="corrupt"):
        b.file("small/003.bin").read_bytes()
    assert not b.file("small/003.bin").is_local
    assert b.file("small/004.bin").read_bytes() == contents["004.bin"]  # its neighbours are intact
    with pytest.raises(lakelet.IntegrityError, match="corrupt"):
        b.pull()
    assert not b.file("small/003.bin").is_local
    assert all(b.file(f"small/{n}").is_local for n in contents if n != "003.bin")
    assert not any(p.is_file() for p in (b.root / "tmp").rglob("*"))


def test_evict_and_url_of_packed_files(remote, machine, make_file, tmp_path) -> None:
    a = machine("a")
    contents = _small_files(make_file, 5)
    a.add(tmp_path / "src" / "small", "small")
    report = a.evict()
    assert report.files == 5 and report.kept_unpushed == []  # in a pack is safely on the remote
    assert a.file("small/002.bin").state == "remote"
    assert a.file("small/002.bin").read_bytes() == contents["002.bin"]
    if remote.kind == "gcs":  # signing needs a service account key; the emulator runs anonymous
        return
    url = a.url("small/001.bin", expires=600)  # a URL serves one key: the member gets its own
    if remote.kind == "file":
        assert Path(url.removeprefix("file://")).read_bytes() == contents["001.bin"]
    else:
        assert urllib.request.urlopen(url, timeout=10).read() == contents["001.bin"]


def test_gc_deletes_unreachable_packs_and_keeps_partly_referenced_ones(tmp_path, make_file) -> None:
    """file:// only: the grace period is crossed by ageing the files (an object store's
    modification time cannot be set)."""
    remote_dir = tmp_path / "remote"
    lakes = {m: lakelet.init(tmp_path / m, remote=remote_dir.as_uri()) for m in ("a", "b", "c")}
    for m in ("a", "b"):
        config = lakes[m].root / "lakelet.toml"
        config.write_text(config.read_text().replace('upload = "write-through"', 'upload = "deferred"'))
    a, b, c = lakelet.open(lakes["a"].root), lakelet.open(lakes["b"].root), lakes["c"]
    # a push killed after its uploads, never resumed: a pack no log entry names
    _small_files(make_file, 3, "orphan")
    a.add(tmp_path / "src" / "orphan", "orphan")
    killed = run_lakelet("push", env={"LAKELET_HOME": str(a.root), "LAKELET_CRASH_AT": "objects-pushed"})
    assert killed.returncode == -9, killed.stderr
    # a push that loses one of its names to c: its pack is named, but only partly referenced
    _small_files(make_file, 3, "partly")
    b.add(tmp_path / "src" / "partly", "partly")
    c.add(make_file("other.bin", b"c's bytes"), "partly/000.bin")
    assert b.push().conflicts == ["partly/000.bin"]

    packs = sorted(p for p in (remote_dir / "packs").rglob("*.pack"))
    assert len(packs) == 2
    for path in packs:
        os.utime(path, (1, 1))
    report = c.gc(timedelta(days=7), remote=True)  # c holds no record of b's lost name
    (gone,) = [p for p in packs if not p.exists()]
    assert report.remote_objects == ["blake3:" + gone.parent.name + gone.name.removesuffix(".pack")]
    assert c.file("partly/001.bin").read_bytes() and c.file("partly/002.bin").read_bytes()


def test_objects_come_back_after_gc_freed_their_pack(tmp_path, make_file) -> None:
    """gc deletes a pack once its members are released (as expired stage outputs are); the same
    bytes pushed again later must be sent again, alone or in a new pack, and found there."""
    remote_dir = tmp_path / "remote"
    a = lakelet.init(tmp_path / "a", remote=remote_dir.as_uri())
    contents = _small_files(make_file, 3, "gone")
    files = a.add(tmp_path / "src" / "gone", "gone")
    a.context.tombstone([_expired(f.record, "2000-01-01T00:00:00+00:00") for f in files])  # what gc writes
    (first,) = list((remote_dir / "packs").rglob("*.pack"))
    os.utime(first, (1, 1))
    a.gc(timedelta(days=7), remote=True)
    assert not first.exists()

    a.add(make_file("back/alone.bin", contents["000.bin"]), "back/alone.bin")  # one object: loose
    make_file("again/001.bin", contents["001.bin"])
    a.add(make_file("again/new.bin", b"a new neighbour").parent, "again")  # a new pack
    b = lakelet.init(tmp_path / "b", remote=remote_dir.as_uri())
    b.sync()  # b's index places all three in the deleted pack first, then learns the rest
    assert b.file("back/alone.bin").read_bytes() == contents["000.bin"]  # the pack is gone: loose
    assert b.file("again/001.bin").read_bytes() == contents["001.bin"]  # the newest pack line
    assert len(b.pull()) == 3
