"""Two machines racing for one name, and pushes killed half-way, on every kind of store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fsspec

import lakelet
from lakelet._digest import Digest
from lakelet._objects import hash_stream

from .conftest import run_lakelet

_RACER = r"""
import json, sys
import lakelet
lake = lakelet.open(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    name, src = line.split()
    try:
        lake.add(src, name)
        print(json.dumps({"name": name, "won": True}), flush=True)
    except lakelet.NameExistsError as e:
        print(json.dumps({"name": name, "won": False, "error": str(e)}), flush=True)
"""


def _racers(roots: list[Path], env: dict[str, str]) -> list[subprocess.Popen]:
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(root)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
        for root in roots
    ]
    for p in procs:  # each has opened its lake: from here the race is only the add itself
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return procs


def _race(procs: list[subprocess.Popen], name: str, sources: list[Path]) -> list[dict]:
    for p, src in zip(procs, sources, strict=True):  # both lines go out back to back
        assert p.stdin is not None
        p.stdin.write(f"{name} {src}\n")
        p.stdin.flush()
    return [json.loads(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]


def test_two_machines_binding_one_name(remote, machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    procs = _racers([a.root, b.root], remote.env)
    try:
        for round_ in range(6):
            name = f"race/{round_}.txt"
            mine, theirs = make_file(f"a{round_}", f"a's {round_}"), make_file(f"b{round_}", f"b's {round_}")
            results = _race(procs, name, [mine, theirs])
            assert sorted(r["won"] for r in results) == [False, True], results
            loser = results[1] if results[0]["won"] else results[0]
            assert "already bound" in loser["error"]
            winner_text = f"a's {round_}" if results[0]["won"] else f"b's {round_}"
            c = machine(f"c{round_}")
            c.sync()
            assert c.file(name).read_text() == winner_text
            # the loser kept nothing of its attempt: no local record, and it reads the winner's bytes
            losing_lake = lakelet.open(b.root if results[0]["won"] else a.root)
            assert losing_lake.file(name).read_text() == winner_text

        same = [make_file("s1", "same"), make_file("s2", "same")]
        assert [r["won"] for r in _race(procs, "race/same.txt", same)] == [True, True]
    finally:
        for p in procs:
            p.stdin.close()  # type: ignore[union-attr]
            p.wait(timeout=60)


def _remote_objects_are_whole(remote) -> int:
    """Every loose object and every pack on the remote hashes to its key; returns how many."""
    fs, root = fsspec.core.url_to_fs(remote.url, **remote.storage_options)
    keys = [*fs.find(f"{root.rstrip('/')}/objects"), *fs.find(f"{root.rstrip('/')}/packs")]
    for key in keys:
        algorithm, prefix, rest = key.removesuffix(".pack").rsplit("/", 3)[-3:]
        with fs.open(key, "rb") as f:
            assert hash_stream(f, algorithm)[0] == Digest(algorithm, prefix + rest), key
    return len(keys)


def test_a_push_killed_at_each_step_is_finished_by_the_next(remote, machine, make_file) -> None:
    a, b = machine("a", upload="deferred"), machine("b")
    for i in range(20):
        make_file(f"batch/{i:02d}.txt", f"content {i}")
    a.add(make_file("batch/big.bin", os.urandom(3 << 20)).parent, "batch")
    env = {**remote.env, "LAKELET_HOME": str(a.root)}

    # killed after the uploads: nothing is bound; killed after the log entry: all of it is
    for point, visible in (("objects-pushed", 0), ("log-appended", 21)):
        killed = run_lakelet("push", env={**env, "LAKELET_CRASH_AT": point})
        assert killed.returncode == -9, killed.stderr
        assert _remote_objects_are_whole(remote) == 2  # one pack of the 20 small files, the big one alone
        b.sync()
        assert len(b.ls()) == visible  # no machine ever lists part of a batch

    finished = run_lakelet("push", env=env)
    assert finished.returncode == 0, finished.stderr
    b.sync()
    assert len(b.ls("batch/")) == 21
    assert b.file("batch/07.txt").read_text() == "content 7"
    assert all(f.state == "local" for f in lakelet.open(a.root).ls())
    fs, root = fsspec.core.url_to_fs(remote.url, **remote.storage_options)
    assert len(fs.find(f"{root.rstrip('/')}/log")) == 1  # the re-push found its batch bound: no second entry


def test_a_pull_killed_mid_download_leaves_no_partial_object(remote, machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    payload = os.urandom(9 << 20)  # several 4 MiB chunks: the kill lands inside the download
    a.add(make_file("big.bin", payload), "big.bin")
    env = {**remote.env, "LAKELET_HOME": str(b.root)}
    killed = run_lakelet("pull", env={**env, "LAKELET_CRASH_AT": "blob-partly-written"})
    assert killed.returncode == -9, killed.stderr
    assert not any(p.is_file() for p in (b.root / "objects").rglob("*"))  # only a temp file, if anything
    assert lakelet.open(b.root).file("big.bin").state == "remote"
    assert run_lakelet("pull", env=env).returncode == 0
    assert lakelet.open(b.root).file("big.bin").read_bytes() == payload
