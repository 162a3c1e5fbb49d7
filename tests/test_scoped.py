"""Scoped stores: Conducto's verbs and semantics on lake.user and lake.pipeline(run)."""

from __future__ import annotations

from pathlib import Path

import pytest

import lakelet


def test_put_get_roundtrip_and_overwrite(lake, make_file, tmp_path) -> None:
    store = lake.pipeline("run-42")
    store.put("in/data.bin", make_file("data.bin", b"\x00\x01\x02"))
    out = tmp_path / "out.bin"
    store.get("in/data.bin", out)
    assert out.read_bytes() == b"\x00\x01\x02"
    store.puts("in/data.bin", b"replaced")  # scoped names may be overwritten
    assert store.gets("in/data.bin") == b"replaced"
    assert store.size("in/data.bin") == 8
    # the replaced blob's bytes are gone from disk
    blobs = [p for p in (lake.root / "scopes").rglob("blake3-*")]
    assert len(blobs) == 1


def test_gets_byte_range_is_half_open(lake) -> None:
    store = lake.user
    store.puts("digits", b"0123456789")
    assert store.gets("digits", byte_range=[2, 5]) == b"234"
    assert store.gets("digits", byte_range=(0, 0)) == b""
    assert store.gets("digits", byte_range=[8, 100]) == b"89"
    with pytest.raises(lakelet.InvalidArgumentError):
        store.gets("digits", byte_range=[5, 2])
    with pytest.raises(lakelet.InvalidArgumentError):
        store.gets("digits", byte_range=[-1, 2])


def test_list_is_recursive_and_prefix_filtered(lake) -> None:
    store = lake.pipeline("r")
    for name in ["a/1", "a/b/2", "ab", "b/3"]:
        store.puts(name, b"x")
    assert store.list() == ["a/1", "a/b/2", "ab", "b/3"]
    assert store.list("a/") == ["a/1", "a/b/2"]
    assert store.list("a") == ["a/1", "a/b/2", "ab"]
    assert store.list("zzz") == []


def test_exists_delete_and_recursive_delete(lake) -> None:
    store = lake.user
    for name in ["d", "d/x", "d/y/z", "keep"]:
        store.puts(name, b"1")
    assert store.exists("d/x") and not store.exists("nope")
    store.delete("d/x")
    assert not store.exists("d/x")
    with pytest.raises(lakelet.NotFoundError):
        store.delete("d/x")
    store.delete("d", recursive=True)
    assert store.list() == ["keep"]
    with pytest.raises(lakelet.NotFoundError):
        store.gets("d/y/z")


def test_scopes_never_see_each_other(lake, make_file, monkeypatch) -> None:
    lake.add(make_file("a.txt", "lake"), "same")
    lake.pipeline("one").puts("same", b"one")
    lake.pipeline("two").puts("same", b"two")
    lake.user.puts("same", b"alice")
    monkeypatch.setenv("LAKELET_USER", "bob@example.com")
    assert lake.user.list() == []
    lake.user.puts("same", b"bob")
    assert lake.pipeline("one").gets("same") == b"one"
    assert lake.pipeline("two").gets("same") == b"two"
    assert lake.user.gets("same") == b"bob"
    assert lake.file("same").read_bytes() == b"lake"
    monkeypatch.setenv("LAKELET_USER", "tester@example.com")
    assert lake.user.gets("same") == b"alice"
    assert [f.name for f in lake.ls(scope="pipeline/one")] == ["same"]


def test_archive_removes_the_run_and_only_it(lake) -> None:
    lake.pipeline("old").puts("x", b"1" * 1000)
    lake.pipeline("keep").puts("x", b"2")
    lake.pipeline("old").archive()
    assert lake.pipeline("old").list() == []
    assert not (lake.root / "scopes" / "pipeline" / "old").exists()
    assert lake.pipeline("keep").gets("x") == b"2"
    lake.pipeline("never-used").archive()  # archiving an empty run is fine


def test_url_is_a_readable_file_url(lake) -> None:
    store = lake.pipeline("r")
    store.puts("u", b"content")
    url = store.url("u")
    assert url.startswith("file://")
    assert Path(url.removeprefix("file://")).read_bytes() == b"content"


def test_missing_names_and_bad_inputs(lake, tmp_path) -> None:
    store = lake.pipeline("r")
    for call in (
        lambda: store.gets("nope"),
        lambda: store.size("nope"),
        lambda: store.url("nope"),
        lambda: store.get("nope", tmp_path / "o"),
    ):
        with pytest.raises(lakelet.NotFoundError, match="nope"):
            call()
    with pytest.raises(lakelet.NotFoundError):
        store.put("x", tmp_path / "missing-file")
    with pytest.raises(lakelet.SourceError):
        store.put("x", tmp_path)
    with pytest.raises(TypeError):
        store.puts("x", "not bytes")  # type: ignore[arg-type]
    assert store.list() == []


def test_concurrent_puts_to_one_scope_leave_a_consistent_store(lake) -> None:
    import concurrent.futures

    store = lake.pipeline("busy")

    def work(i: int) -> None:
        store.puts("shared", str(i % 3).encode() * 100)
        store.puts(f"own/{i}", str(i).encode())

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(40)))
    assert len(store.list("own/")) == 40
    assert store.gets("shared") in {b"0" * 100, b"1" * 100, b"2" * 100}
    blobs = list((lake.root / "scopes" / "pipeline" / "busy").rglob("blake3-*"))
    assert len(blobs) == 41  # replaced blobs were freed, none leaked


def _corrupt(path: Path) -> None:  # as tests/test_integrity.py does
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.write(b"X")


@pytest.mark.parametrize("previous", [None, b"old export"], ids=["absent", "existing"])
def test_get_of_a_corrupted_object_leaves_the_target_as_it_was(lake, tmp_path, previous) -> None:
    store = lake.pipeline("r")
    store.puts("blob", b"0123456789")
    _corrupt(Path(store.url("blob").removeprefix("file://")))
    out_dir = tmp_path / "export"
    out_dir.mkdir()
    target = out_dir / "blob.bin"
    if previous is not None:
        target.write_bytes(previous)
    with pytest.raises(lakelet.IntegrityError):
        store.get("blob", target)
    assert [p.name for p in out_dir.iterdir()] == ([] if previous is None else ["blob.bin"])
    if previous is not None:
        assert target.read_bytes() == previous


def test_get_that_fails_leaves_no_temp_file_beside_the_target(lake, tmp_path) -> None:
    store = lake.user
    store.puts("blob", b"content")
    out_dir = tmp_path / "export"
    (out_dir / "taken" / "inside").mkdir(parents=True)  # a directory cannot be replaced by a file
    with pytest.raises(lakelet.InvalidArgumentError, match="is a directory"):
        store.get("blob", out_dir / "taken")
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*")) == ["taken", "taken/inside"]
    with pytest.raises(lakelet.NotFoundError, match="does not exist"):
        store.get("blob", out_dir / "missing" / "blob.bin")
    assert not (out_dir / "missing").exists()


def test_get_replaces_an_existing_target(lake, tmp_path) -> None:
    store = lake.user
    store.puts("blob", b"new content")
    (tmp_path / "export").mkdir()
    target = tmp_path / "export" / "blob.bin"
    target.write_bytes(b"an older, longer export of something else")
    store.get("blob", target)
    assert target.read_bytes() == b"new content"
    assert [p.name for p in target.parent.iterdir()] == ["blob.bin"]
