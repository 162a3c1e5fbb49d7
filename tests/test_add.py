"""Adding files to the lake scope: files, directories, URLs, write-once semantics, --move."""

from __future__ import annotations

import http.server
import os
import stat
import threading
from pathlib import Path

import fsspec
import pytest

import lakelet
from lakelet.core._digest import CHUNK_SIZE, Digest, digest_bytes
from lakelet.core._progress import SILENT
from lakelet.lake._add import ingest
from lakelet.storage._objects import _KERNEL_COPY_SPAN
from lakelet.storage._sources import resolve

from .conftest import snapshot


def test_add_stores_content_once_under_its_digest(lake, make_file) -> None:
    src = make_file("a.csv", "id,x\n1,2\n")
    f = lake.add(src, "raw/a.csv")
    assert f.name == "raw/a.csv"
    assert f.digest == str(digest_bytes(b"id,x\n1,2\n")) and f.digest.startswith("blake3:")
    assert f.size == 9 and f.is_local and f.creator == "tester@example.com"
    assert f.open().read() == "id,x\n1,2\n"
    assert f.read_bytes() == b"id,x\n1,2\n"
    # the same bytes under a second name share one object, which is read-only on disk
    lake.add(src, "raw/copy.csv")
    objects = [p for p in (lake.root / "objects").rglob("*") if p.is_file()]
    assert len(objects) == 1
    assert not objects[0].stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)


def test_same_content_again_is_a_noop_and_other_content_is_refused(lake, make_file) -> None:
    first = lake.add(make_file("a.txt", "one"), "n.txt")
    again = lake.add(make_file("b.txt", "one"), "n.txt")
    assert again.digest == first.digest and again.created_at == first.created_at
    before = snapshot(lake.root)
    with pytest.raises(lakelet.NameExistsError, match="write-once"):
        lake.add(make_file("c.txt", "two"), "n.txt")
    assert snapshot(lake.root) == before
    assert lake.file("n.txt").read_bytes() == b"one"


def test_file_handle_is_lazy_and_reports_missing_names(lake) -> None:
    handle = lake.file("not/there.txt")  # no error: only a handle
    assert not lake.exists("not/there.txt")
    with pytest.raises(lakelet.NotFoundError, match="not/there.txt"):
        _ = handle.digest
    with pytest.raises(KeyError):  # NotFoundError is also a KeyError
        handle.open()


def test_add_directory_binds_each_file_under_the_name(lake, make_file) -> None:
    make_file("d/x.txt", "x")
    make_file("d/sub/y.txt", "y")
    make_file("d/sub.txt", "s")  # sorted segment by segment: sub/… before sub.txt
    files = lake.add(make_file("d/z.txt", "z").parent, "data")
    assert [f.name for f in files] == ["data/sub/y.txt", "data/sub.txt", "data/x.txt", "data/z.txt"]
    assert [f.name for f in lake.ls("data/sub/")] == ["data/sub/y.txt"]
    assert lake.file("data/sub/y.txt").read_bytes() == b"y"


def test_directory_conflict_anywhere_adds_nothing(lake, make_file) -> None:
    lake.add(make_file("old.txt", "old"), "data/m.txt")
    make_file("d/a.txt", "a")
    make_file("d/m.txt", "different")
    make_file("d/z.txt", "z")
    before = snapshot(lake.root)
    with pytest.raises(lakelet.NameExistsError):
        lake.add(make_file("d/a.txt", "a").parent, "data")
    assert snapshot(lake.root) == before
    assert [f.name for f in lake.ls()] == ["data/m.txt"]


def test_readding_an_unchanged_directory_is_a_noop(lake, make_file) -> None:
    make_file("d/a.txt", "a")
    directory = make_file("d/b.txt", "b").parent
    first = lake.add(directory, "data")
    before = snapshot(lake.root)
    assert [f.digest for f in lake.add(directory, "data")] == [f.digest for f in first]
    assert snapshot(lake.root) == before


def test_a_directory_of_stored_content_under_new_names_writes_no_object(lake, make_file) -> None:
    make_file("d/a.txt", "a")
    directory = make_file("d/sub/b.txt", "b").parent.parent
    lake.add(directory, "first")
    objects = sorted((lake.root / "objects").rglob("*"))
    files = lake.add(directory, "second")
    assert [f.name for f in files] == ["second/a.txt", "second/sub/b.txt"]
    assert sorted((lake.root / "objects").rglob("*")) == objects
    assert lake.file("second/sub/b.txt").read_bytes() == b"b"


def test_a_damaged_small_object_is_replaced_when_its_content_is_added_again(lake, make_file) -> None:
    make_file("d/a.txt", "alpha")
    directory = make_file("d/b.txt", "beta").parent
    lake.add(directory, "first")
    damaged = lake.context.objects.path(Digest.parse(lake.file("first/a.txt").digest))
    os.chmod(damaged, 0o644)
    damaged.write_bytes(b"alp")  # cut short behind lakelet's back
    with pytest.raises(lakelet.IntegrityError):
        lake.file("first/a.txt").read_bytes()
    lake.add(directory, "second")
    assert lake.file("first/a.txt").read_bytes() == b"alpha"
    assert lake.file("second/a.txt").read_bytes() == b"alpha"
    assert lake.fsck().ok


def test_a_file_that_grew_after_it_was_listed_is_stored_whole(lake, tmp_path) -> None:
    """A directory's small files are read in one go; one that outgrew that is streamed."""
    directory = tmp_path / "d"
    directory.mkdir()
    (directory / "grown.bin").write_bytes(b"tiny")
    (directory / "small.bin").write_bytes(b"small")
    listed = resolve(directory)
    (directory / "grown.bin").write_bytes(os.urandom(CHUNK_SIZE + 123))  # between listing and storing
    records = ingest(lake.context, [(f"d/{s.relative}", s) for s in listed], {}, False, SILENT)
    assert [r.size for r in records] == [CHUNK_SIZE + 123, 5]
    assert lake.file("d/grown.bin").read_bytes() == (directory / "grown.bin").read_bytes()
    assert lake.fsck().ok


def test_a_large_file_is_copied_whole_and_stored_under_the_digest_of_its_bytes(lake, tmp_path) -> None:
    """A local file is copied by the kernel span by span and hashed from the copy."""
    content = os.urandom(_KERNEL_COPY_SPAN + 12_345)  # a full span, then a short one
    (tmp_path / "big.bin").write_bytes(content)
    f = lake.add(tmp_path / "big.bin", "big.bin")
    assert f.size == len(content) and f.digest == str(digest_bytes(content))
    assert f.read_bytes() == content


def test_a_file_whose_size_stat_does_not_tell_is_read_whole(lake) -> None:
    """/proc files stat as empty: the kernel copy gives way to reading them."""
    f = lake.add("/proc/version", "version.txt")
    content = Path("/proc/version").read_bytes()
    assert content and f.size == len(content) and f.read_bytes() == content


def test_missing_source_and_empty_directory(lake, tmp_path) -> None:
    with pytest.raises(lakelet.NotFoundError, match="does not exist"):
        lake.add(tmp_path / "nope.txt", "x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(lakelet.SourceError, match="no files"):
        lake.add(tmp_path / "empty", "x")
    assert lake.ls() == []


def test_move_takes_the_file_and_leaves_source_on_failure(lake, make_file) -> None:
    src = make_file("m.txt", "moved")
    f = lake.add(src, "moved.txt", move=True)
    assert not src.exists() and f.read_bytes() == b"moved"
    # a conflicting move keeps the user's file where it was, untouched
    src2 = make_file("m2.txt", "other")
    with pytest.raises(lakelet.NameExistsError):
        lake.add(src2, "moved.txt", move=True)
    assert src2.read_bytes() == b"other"
    # moving content already stored removes the source once the name is bound
    src3 = make_file("m3.txt", "moved")
    lake.add(src3, "again.txt", move=True)
    assert not src3.exists()


def test_move_directory_removes_it(lake, make_file) -> None:
    make_file("mv/a/b.txt", "b")
    directory = make_file("mv/c.txt", "c").parent
    lake.add(directory, "mv", move=True)
    assert not directory.exists()
    assert lake.file("mv/a/b.txt").read_bytes() == b"b"


def test_add_from_fsspec_url(lake) -> None:
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/data/one.txt", b"1")
    fs.pipe("/bucket/data/sub/two.txt", b"22")
    files = lake.add("memory://bucket/data", "mem")
    assert {f.name: f.size for f in files} == {"mem/one.txt": 1, "mem/sub/two.txt": 2}
    single = lake.add("memory://bucket/data/one.txt", "single.txt")
    assert single.read_bytes() == b"1"
    with pytest.raises(lakelet.NotFoundError):
        lake.add("memory://bucket/nothing", "x")


def test_add_from_file_url(lake, make_file) -> None:
    src = make_file("u.txt", "via url")
    assert lake.add(src.as_uri(), "u.txt").read_bytes() == b"via url"


@pytest.fixture
def http_server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "page.csv").write_bytes(b"a,b\n1,2\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_add_from_http_url_records_no_credentials(lake, http_server) -> None:
    host = http_server.removeprefix("http://")
    f = lake.add(f"http://user:secret@{host}/page.csv?token=abc", "web.csv")
    assert f.read_bytes() == b"a,b\n1,2\n"
    assert f.meta["source"] == f"{http_server}/page.csv"
    records = [p.read_text() for p in (lake.root / "names").rglob("*.json*")]
    assert records and not any("secret" in r or "token" in r for r in records)
    with pytest.raises(lakelet.NotFoundError, match="404"):
        lake.add(f"{http_server}/missing.csv", "missing.csv")


def test_a_source_that_is_not_a_regular_file_is_a_clear_error(lake, tmp_path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(lakelet.SourceError, match="neither a file nor a directory"):
        lake.add(fifo, "p")
    assert lake.ls() == []


def test_rm_force_keeps_a_tombstone_and_never_rebinds(lake, make_file) -> None:
    src = make_file("a.txt", "a")
    lake.add(src, "a.txt")
    with pytest.raises(lakelet.NameExistsError, match="force"):
        lake.rm("a.txt")
    lake.rm("a.txt", force=True)
    assert not lake.exists("a.txt") and lake.ls() == []
    with pytest.raises(lakelet.NotFoundError, match="removed"):
        lake.file("a.txt").open()
    with pytest.raises(lakelet.NameExistsError, match="never rebound"):
        lake.add(src, "a.txt")
    # the record survives a rebuild of the index
    lake.fsck()
    assert not lake.exists("a.txt")
