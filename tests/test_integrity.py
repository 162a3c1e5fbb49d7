"""Corrupted objects are never returned; fsck finds them and rebuilds the index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lakelet


def _corrupt(path: Path, data: bytes | None = None, truncate: bool = False) -> None:
    os.chmod(path, 0o644)
    if truncate:
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size - 1)
    else:
        with open(path, "r+b") as f:
            f.write(data or b"X")


@pytest.mark.parametrize("truncate", [False, True], ids=["flipped", "truncated"])
def test_reading_a_corrupted_object_raises_and_returns_nothing(lake, make_file, truncate) -> None:
    f = lake.add(make_file("a.txt", "precious data"), "a.txt")
    assert f.read_bytes() == b"precious data"  # verified and remembered
    _corrupt(f.path, truncate=truncate)
    with pytest.raises(lakelet.IntegrityError, match="run `lakelet fsck`"):
        lake.file("a.txt").open("rb")
    with pytest.raises(lakelet.IntegrityError):
        lake.file("a.txt").read_text()


def test_corruption_that_keeps_the_size_is_caught_too(lake, make_file) -> None:
    f = lake.add(make_file("a.txt", "abcdef"), "a.txt")
    path = f.path
    _corrupt(path, b"Z")  # same size; ctime changes, so the fingerprint no longer matches
    assert path.stat().st_size == 6
    with pytest.raises(lakelet.IntegrityError, match="does not match its digest"):
        lake.file("a.txt").read_bytes()


def test_a_small_object_is_rehashed_on_every_read_whatever_the_index_says(lake, make_file) -> None:
    """Under 8 KiB hashing is cheaper than the fingerprint lookup, so nothing is trusted."""
    path = lake.add(make_file("a.txt", "small and precious"), "a.txt").path
    _corrupt(path, b"S")
    st = os.stat(path)  # as if the index had verified the altered bytes
    lake.context.catalog.record_verified(
        path.relative_to(lake.root).as_posix(), (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    )
    with pytest.raises(lakelet.IntegrityError, match="does not match its digest"):
        lake.file("a.txt").read_bytes()


def test_scoped_reads_are_verified(lake) -> None:
    store = lake.pipeline("r1")
    store.puts("blob", b"0123456789")
    blob = Path(store.url("blob").removeprefix("file://"))
    _corrupt(blob, b"9")
    with pytest.raises(lakelet.IntegrityError):
        store.gets("blob", byte_range=[0, 2])


def test_fsck_quarantines_corrupt_objects_and_lists_them(lake, make_file) -> None:
    good = lake.add(make_file("g.txt", "good"), "good.txt")
    bad = lake.add(make_file("b.txt", "bad"), "bad.txt")
    lake.user.puts("scratch", b"scratch")
    _corrupt(bad.path)
    report = lake.fsck()
    assert report.corrupt == [bad.digest] and not report.ok
    assert report.missing == ["lake:bad.txt"]
    assert report.objects_checked == 3
    assert (lake.root / "quarantine").is_dir()
    assert good.read_bytes() == b"good"
    with pytest.raises(lakelet.NotFoundError, match="not stored locally"):
        lake.file("bad.txt").read_bytes()


def test_fsck_rebuilds_a_lost_index_from_the_records(lake, make_file) -> None:
    lake.add(make_file("a.txt", "a"), "raw/a.txt")
    lake.add(make_file("d/b.txt", "b").parent, "raw/d")
    lake.pipeline("run-7").puts("p/q", b"pq")
    lake.user.puts("mine", b"m")
    lake.add(make_file("gone.txt", "g"), "gone.txt")
    lake.rm("gone.txt", force=True)
    lake.close()
    (lake.root / "index.sqlite").unlink()
    for extra in ("index.sqlite-wal", "index.sqlite-shm"):
        (lake.root / extra).unlink(missing_ok=True)

    reopened = lakelet.open(lake.root)
    report = reopened.fsck()
    assert report.ok and report.names_indexed == 5
    assert [f.name for f in reopened.ls()] == ["raw/a.txt", "raw/d/b.txt"]
    assert reopened.pipeline("run-7").gets("p/q") == b"pq"
    assert reopened.user.list() == ["mine"]
    assert not reopened.exists("gone.txt")


def test_fsck_removes_temp_files_of_dead_processes(lake) -> None:
    stale = lake.root / "tmp" / "999999999-deadbeef.tmp"
    stale.write_bytes(b"partial")
    mine = lake.root / "tmp" / f"{os.getpid()}-cafe.tmp"
    mine.write_bytes(b"in progress")
    lake.fsck()
    assert not stale.exists() and mine.exists()
