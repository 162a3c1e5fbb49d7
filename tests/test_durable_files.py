"""The small files lakelet publishes by name (bookmarks, run logs and reports, secrets and
their key, a new lake's config, a file:// remote's keys) are durable before they are
visible: written whole to a temp file, fsynced, then linked or renamed into place, their
directory fsynced after. A kill leaves the old file or none, never a part, and nothing
beside it that a listing would take for a file (see also test_crash_safety.py for adds and
test_datasets.py for manifests)."""

from __future__ import annotations

import os

import pytest

from lakelet._durable import publish_file


@pytest.mark.parametrize("replace", [False, True], ids=["create-once", "replace"])
def test_a_file_is_fsynced_before_its_name_is_given_and_its_directory_after(
        tmp_path, monkeypatch, replace) -> None:
    """What a kill cannot show, a power cut would: a name given to a file whose bytes never
    reached the disk, or a name lost after the write was reported done. os.fsync, os.link
    and os.replace are wrapped to record their order, then called as they are."""
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    path = tmp_path / "new" / "f.json"
    if replace:
        publish_file(path, b"old", tmp_dir)
    events: list[tuple[str, object]] = []
    fsync, link, rename = os.fsync, os.link, os.replace

    def watched_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def watched(call):
        def publish(src, dst, **kwargs) -> None:
            call(src, dst, **kwargs)
            events.append(("publish", os.fspath(dst)))
        return publish

    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(os, "link", watched(link))
    monkeypatch.setattr(os, "replace", watched(rename))
    publish_file(path, b"new", tmp_dir, replace=replace)
    monkeypatch.undo()
    published = events.index(("publish", os.fspath(path)))
    assert ("fsync", path.stat().st_ino) in events[:published]
    assert ("fsync", path.parent.stat().st_ino) in events[published + 1:]
    assert path.read_bytes() == b"new" and list(tmp_dir.iterdir()) == []


def test_create_once_refuses_a_taken_name_and_replace_takes_it(tmp_path) -> None:
    tmp_dir = tmp_path / "tmp"
    tmp_dir.mkdir()
    path, source = tmp_path / "f", tmp_path / "source"
    publish_file(path, b"first", tmp_dir, mode=0o444)
    with pytest.raises(FileExistsError):
        publish_file(path, b"second", tmp_dir)
    assert path.read_bytes() == b"first" and list(tmp_dir.iterdir()) == []
    assert path.stat().st_mode & 0o777 == 0o444
    source.write_bytes(b"copied " * 100_000)
    publish_file(path, source, tmp_dir, replace=True)  # a file's content, copied
    assert path.read_bytes() == source.read_bytes() and list(tmp_dir.iterdir()) == []
