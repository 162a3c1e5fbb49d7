"""Two machines racing for one name, pushes killed half-way, and a push racing another
machine's `gc --remote`, on every kind of store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import pyarrow as pa
import pytest

import lakelet
from lakelet.core._digest import Digest
from lakelet.lake._gc import _expired
from lakelet.storage._objects import hash_stream

from .conftest import WhenDone, run_lakelet

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
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
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


# --- a push against another machine's `gc --remote`, at the worst moments ---------------------
#
# The gc runs with ``now`` two days ahead, so every key on the remote is past the 24 h grace
# (the stores stamp keys with their own clock, which a test cannot set on S3, Azure or GCS);
# the moments are reached through the push's progress callback or by wrapping one call of the
# gc machine's remote, never by sleeping. docs/remote-layout.md, "gc against a push", has the why.

WEEK = timedelta(days=7)


def _past_grace() -> datetime:
    return datetime.now(UTC) + timedelta(days=2)


def _released(lake: lakelet.Lake, name: str) -> str:
    """Tombstone ``name`` as gc does an expired stage output, so that nothing references its
    object (which stays on the remote until a `gc --remote`). Returns the object's digest."""
    record = lake.file(name).record
    lake.context.tombstone([_expired(record, "2000-01-01T00:00:00+00:00")])
    return record.digest


def _everything_pulls(machine, expected: dict[str, bytes]) -> None:
    """A machine that knows only the remote URL finds exactly ``expected`` bound, and every byte."""
    pulled = machine("reader").pull()
    assert {f.name: f.read_bytes() for f in pulled} == expected


def _unzstd(body: bytes) -> bytes:
    """An entry's lines: format 3 compresses them with zstd (its magic number first)."""
    if not body.startswith(b"\x28\xb5\x2f\xfd"):
        return body
    return pa.CompressedInputStream(pa.BufferReader(body), "zstd").read()


def _fs(remote):
    """The remote's store, seen afresh (fsspec caches listings per instance; a stale one hides
    the entries written since)."""
    fs, root = fsspec.core.url_to_fs(
        remote.url, skip_instance_cache=True, use_listings_cache=False, **remote.storage_options
    )
    return fs, root.rstrip("/")


def _sweep_lines(remote) -> list[dict]:
    fs, root = _fs(remote)
    bodies = [_unzstd(fs.cat_file(key)) for key in sorted(fs.find(f"{root}/log"))]
    lines = [json.loads(line) for body in bodies for line in body.splitlines()]
    return [line for line in lines if "sweep" in line or "swept" in line]


def test_a_gc_between_a_push_finding_a_big_object_and_binding_it(remote, machine, make_file) -> None:
    """B finds the object of its 9 MiB file on the remote (a's, unreferenced since its name
    expired) and skips the upload; a's gc deletes it before B's log entry is appended. (Big
    enough that the reader streams it from where B sent it again, rather than holding it.)"""
    a, b = machine("a"), machine("b", upload="deferred")
    payload = os.urandom(9 << 20)
    a.add(make_file("old.bin", payload), "old/big.bin")
    digest = _released(a, "old/big.bin")
    b.add(make_file("new.bin", payload), "new/big.bin")
    dry = a.gc(WEEK, dry_run=True, remote=True, now=_past_grace())
    assert dry.remote_objects == [digest] and _sweep_lines(remote) == []  # a dry run announces nothing

    gc = WhenDone(lambda: lakelet.open(a.root).gc(WEEK, remote=True, now=_past_grace()))
    report = b.push(progress=gc)
    assert (report.names, report.conflicts) == (1, [])
    _everything_pulls(machine, {"new/big.bin": payload})
    assert gc.result is not None and gc.result.remote_objects == [digest]  # the old copy went
    assert report.objects == 1  # found, then sent again after all, under a key of its own
    # an older lakelet reads a line with "pack" as a pack line: these read as empty packs
    assert _sweep_lines(remote) and all(
        line["pack"] == "" and line["members"] == [] for line in _sweep_lines(remote)
    )

    # once the sweep said it was done, its keys are plain keys again: a later push of the
    # same bytes stores them loose, where they were, not in a pack of their own
    machine("late").add(make_file("late.bin", payload), "late/big.bin")
    fs, root = _fs(remote)
    algorithm, hexdigest = digest.split(":")
    assert fs.exists(f"{root}/objects/{algorithm}/{hexdigest[:2]}/{hexdigest[2:]}")


@pytest.mark.parametrize("moment", ["judging its age", "deleting it"])
def test_a_push_while_a_gc_is_judging_or_deleting_the_object_it_finds(
    remote, machine, make_file, monkeypatch, moment
) -> None:
    """B's whole push (the object found on the remote, not sent, its name bound) runs inside
    a's gc: after the gc read the log and while it reads the object's stamp (the object is old:
    the gc would delete it), or when it is about to delete it."""
    a, b = machine("a"), machine("b", upload="deferred")
    payload = os.urandom(3 << 20)
    a.add(make_file("old.bin", payload), "old/big.bin")
    digest = _released(a, "old/big.bin")
    b.add(make_file("new.bin", payload), "new/big.bin")
    algorithm, hexdigest = digest.split(":")
    key = f"objects/{algorithm}/{hexdigest[:2]}/{hexdigest[2:]}"

    gc_remote = a.context.require_remote("gc --remote").remote
    pushed = []

    def b_pushes() -> None:
        if not pushed:
            pushed.append(b.push())

    if moment == "judging its age":
        stamp = gc_remote.fs.info

        def info(path, **kwargs):
            found = stamp(path, **kwargs)
            if os.fspath(path).endswith(key):  # a local find passes DirEntry objects
                b_pushes()
            return found

        monkeypatch.setattr(gc_remote.fs, "info", info)
    else:
        delete = gc_remote.remove

        def remove(relative: str) -> None:
            b_pushes()
            delete(relative)

        monkeypatch.setattr(gc_remote, "remove", remove)

    report = a.gc(WEEK, remote=True, now=_past_grace())
    assert pushed and (pushed[0].names, pushed[0].conflicts) == (1, [])
    _everything_pulls(machine, {"new/big.bin": payload})
    if moment == "judging its age":  # b's entry came before the gc's: the gc sees the name
        assert report.remote_objects == [] and pushed[0].objects == 0  # nothing sent again
        assert _sweep_lines(remote) == []  # nothing was left to announce
    else:  # the gc announced the deletion first: b sends the bytes again, under a new key
        assert report.remote_objects == [digest] and pushed[0].objects == 1


def test_a_gc_deleting_the_pack_a_resumed_push_sends_again(remote, machine, make_file, tmp_path) -> None:
    """Small objects are always sent, in packs named by their content: a push resumed after an
    interruption rebuilds the very pack the first attempt left, under the same key, which a gc
    judged (old, unreferenced) before the resumed push overwrote it, and deletes after."""
    a = machine("a", upload="deferred")
    contents = {f"small/{i}.bin": os.urandom(4096) for i in range(3)}
    for name, data in contents.items():
        make_file(name, data)
    a.add(tmp_path / "src" / "small", "small")
    killed = run_lakelet(
        "push", env={**remote.env, "LAKELET_HOME": str(a.root), "LAKELET_CRASH_AT": "objects-pushed"}
    )
    assert killed.returncode == -9, killed.stderr
    fs, root = _fs(remote)
    (orphan,) = fs.find(f"{root}/packs")
    algorithm, prefix, rest = orphan.removesuffix(".pack").rsplit("/", 3)[-3:]

    m = machine("m").root
    gc = WhenDone(lambda: lakelet.open(m).gc(WEEK, remote=True, now=_past_grace()))
    report = lakelet.open(a.root).push(progress=gc)
    assert (report.names, report.conflicts) == (3, [])
    _everything_pulls(machine, contents)
    assert gc.result is not None and gc.result.remote_objects == [f"{algorithm}:{prefix}{rest}"]
    fs, root = _fs(remote)
    (resent,) = fs.find(f"{root}/packs")
    assert resent != orphan  # the same members, under a key of its own


def test_a_snapshot_taken_while_a_gc_deletes_tells_a_new_machine(
    remote, machine, make_file, monkeypatch
) -> None:
    """A machine that starts from a snapshot reads no entry before it: the snapshot holds the
    sweeps not done by then, so a push from that machine still avoids the keys being deleted."""
    monkeypatch.setattr("lakelet.remote._sync.SNAPSHOT_EVERY", 3)
    a = machine("a")
    payload = os.urandom(3 << 20)
    a.add(make_file("old.bin", payload), "old/big.bin")  # entry 1
    _released(a, "old/big.bin")  # entry 2; the gc's sweep is entry 3
    gc_remote = a.context.require_remote("gc --remote").remote
    delete = gc_remote.remove
    pushed = []

    def remove(relative: str) -> None:
        if not pushed:
            machine("s").sync()  # a machine that has read entries 1-3 takes a snapshot
            fs, root = _fs(remote)
            snapshots = {k.split("/snapshots/", 1)[1].split("/")[0] for k in fs.find(f"{root}/snapshots")}
            assert snapshots == {"000000000003"}
            b = machine("b", upload="deferred")
            b.add(make_file("new.bin", payload), "new/big.bin")
            pushed.append(b.push())
        delete(relative)

    monkeypatch.setattr(gc_remote, "remove", remove)
    a.gc(WEEK, remote=True, now=_past_grace())
    assert pushed and pushed[0].names == 1
    _everything_pulls(machine, {"new/big.bin": payload})
    assert pushed[0].objects == 1  # sent again, under a key the sweep does not name
