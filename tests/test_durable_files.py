"""The small files lakelet publishes by name (bookmarks, run logs and reports, secrets and
their key, a new lake's config, a file:// remote's keys) are durable before they are
visible: written whole to a temp file, fsynced, then linked or renamed into place, their
directory fsynced after. A kill leaves the old file or none, never a part, and nothing
beside it that a listing would take for a file (see also test_crash_safety.py for adds and
test_datasets.py for manifests)."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import lakelet
from lakelet.core._durable import publish_file
from lakelet.datasets._state import run_logs, write_run_log

KEY = base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize("replace", [False, True], ids=["create-once", "replace"])
def test_a_file_is_fsynced_before_its_name_is_given_and_its_directory_after(
    tmp_path, monkeypatch, replace
) -> None:
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
    assert ("fsync", path.parent.stat().st_ino) in events[published + 1 :]
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


def _killed_at(point: str, script: str, *args: object, env: dict[str, str] | None = None) -> None:
    """Run ``script`` in a fresh interpreter that SIGKILLs itself at ``point``."""
    full_env = {**os.environ, **(env or {}), "LAKELET_CRASH_AT": point}
    done = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)], env=full_env, capture_output=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _temp_only_in_tmp_until_fsck(root: Path) -> None:
    """The killed writer's temp file is in the lake's tmp/, which fsck empties."""
    assert len(_files(root / "tmp")) == 1
    assert lakelet.open(root).fsck().ok and _files(root / "tmp") == []


SET_STATE = """
import sys, lakelet
lakelet.open(sys.argv[1]).state("orders").set({"cursor": int(sys.argv[2])})
"""


def test_a_bookmark_killed_before_it_is_published_leaves_the_previous_one(lake) -> None:
    lake.state("orders").set({"cursor": 1})
    _killed_at("state-written", SET_STATE, lake.root, 2)
    assert lakelet.open(lake.root).state("orders").get() == {"cursor": 1}
    assert _files(lake.root / "state" / "orders") == ["state.json"]
    _temp_only_in_tmp_until_fsck(lake.root)


WRITE_LOG = """
import sys, lakelet
from lakelet.datasets._state import write_run_log
write_run_log(lakelet.open(sys.argv[1]).context, "orders", {"rows": 3})
"""


def test_a_run_log_killed_before_it_is_published_is_not_there(lake) -> None:
    _killed_at("run-log-written", WRITE_LOG, lake.root)
    assert run_logs(lakelet.open(lake.root).context, "orders") == []
    assert _files(lake.root / "logs" / "orders") == []
    _temp_only_in_tmp_until_fsck(lake.root)
    write_run_log(lake.context, "orders", {"rows": 3})
    assert run_logs(lake.context, "orders") == [{"rows": 3}]


PIPELINE = """
import lakelet

@lakelet.stage
def one():
    return {"n": 1}
"""

RUN = """
import sys, lakelet
sys.path.insert(0, sys.argv[2])
import durable_pipeline
lakelet.use(lakelet.open(sys.argv[1]))
lakelet.run(durable_pipeline.one, run_id="r1")
"""


def test_a_run_report_killed_before_it_is_published_is_not_there(lake, tmp_path) -> None:
    (tmp_path / "durable_pipeline.py").write_text(PIPELINE)
    _killed_at("run-report-written", RUN, lake.root, tmp_path)
    assert lakelet.open(lake.root).runs() == [] and _files(lake.root / "runs") == []
    _temp_only_in_tmp_until_fsck(lake.root)
    again = subprocess.run(
        [sys.executable, "-c", RUN, str(lake.root), str(tmp_path)], capture_output=True, timeout=120
    )
    assert again.returncode == 0, again.stderr.decode()
    assert [r["run_id"] for r in lakelet.open(lake.root).runs()] == ["r1"]


def test_a_run_report_is_kept_here_before_it_is_sent_to_the_remote(tmp_path) -> None:
    # a report of work done on this machine must not be on the remote only
    remote = tmp_path / "remote"
    lake = lakelet.init(tmp_path / "lake", remote=remote.as_uri())
    (tmp_path / "durable_pipeline.py").write_text(PIPELINE)
    _killed_at("run-report-written", RUN, lake.root, tmp_path)
    assert not (remote / "runs").exists() or _files(remote / "runs") == []
    again = subprocess.run(
        [sys.executable, "-c", RUN, str(lake.root), str(tmp_path)], capture_output=True, timeout=120
    )
    assert again.returncode == 0, again.stderr.decode()
    assert [p.name for p in (remote / "runs").iterdir()] == ["r1.json"]


SET_SECRET = """
import sys, lakelet
lakelet.open(sys.argv[1]).secrets.set("TOKEN", sys.argv[2])
"""


def test_a_secret_killed_before_it_is_published_keeps_its_old_value(lake, monkeypatch) -> None:
    monkeypatch.setenv("LAKELET_SECRET_KEY", KEY)
    lake.secrets.set("TOKEN", "old")
    _killed_at("secret-written", SET_SECRET, lake.root, "new")
    assert lakelet.open(lake.root).secrets.values(["TOKEN"]) == {"TOKEN": "old"}
    assert _files(lake.root / "secrets" / "user" / "tester@example.com") == ["TOKEN.json"]
    _temp_only_in_tmp_until_fsck(lake.root)


def test_a_secret_key_killed_before_it_is_published_is_made_anew(lake, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LAKELET_SECRET_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    _killed_at("secret-key-written", SET_SECRET, lake.root, "v")
    keys = tmp_path / "config" / "lakelet"
    assert "secret.key" not in _files(keys) and len(_files(keys)) == 1  # the killed one's temp
    assert lake.secrets.list() == []
    lake.secrets.set("TOKEN", "v")
    assert lake.secrets.values(["TOKEN"]) == {"TOKEN": "v"}
    assert len(base64.b64decode((keys / "secret.key").read_bytes())) == 32


INIT = """
import sys, lakelet
lakelet.init(sys.argv[1])
"""


def test_an_init_killed_before_its_config_is_published_made_no_lake(tmp_path) -> None:
    root = tmp_path / "lake"
    _killed_at("config-written", INIT, root)
    assert "lakelet.toml" not in _files(root)
    with pytest.raises(lakelet.LakeNotFoundError):
        lakelet.open(root)
    lakelet.init(root)
    assert "format = 2" in (root / "lakelet.toml").read_text()
    assert lakelet.open(root).fsck().ok and _files(root / "tmp") == []


def test_a_run_log_killed_before_it_reaches_a_file_remote_is_not_listed(tmp_path) -> None:
    """A temp file beside the key would be: the listing of logs/orders/ finds every file."""
    remote = tmp_path / "remote"
    lake = lakelet.init(tmp_path / "lake", remote=remote.as_uri())
    _killed_at("remote-file-written", WRITE_LOG, lake.root)
    assert run_logs(lakelet.open(lake.root).context, "orders") == []
    assert _files(remote / "logs" / "orders") == [] and len(_files(remote / "tmp")) == 1
    write_run_log(lake.context, "orders", {"rows": 3})
    assert run_logs(lake.context, "orders") == [{"rows": 3}]
