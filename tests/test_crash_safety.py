"""SIGKILL at any step of `add`, a stage run, `push`, `pull` or `write_dataset` leaves no name
pointing at missing or partial content, and running the same command again succeeds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

import lakelet

ADD_SCRIPT = """
import sys, lakelet
lake = lakelet.open(sys.argv[1])
lake.add(sys.argv[2], sys.argv[3])
print("done", flush=True)
"""

# Every step of an add, in order (see _faults.reached calls).
SINGLE_FILE_POINTS = [
    "blob-partly-written",
    "blob-before-rename",
    "blob-after-rename",
    "objects-stored",
    "segment-written",
    "names-bound",
]
# A directory's small files take their own path (read whole, then written): f00 reaches the
# blob points first through it; f03, over one chunk, is streamed (blob-partly-written).
DIRECTORY_POINTS = [
    "blob-partly-written",
    "blob-before-rename",
    "blob-after-rename",
    "objects-stored",
    "segment-written",
    "names-bound",
]


def _add_in_subprocess(lake_root: Path, src: Path, name: str, crash_at: str | None):
    env = {**os.environ, "LAKELET_CRASH_AT": crash_at or ""}
    return subprocess.run(
        [sys.executable, "-c", ADD_SCRIPT, str(lake_root), str(src), name],
        env=env,
        capture_output=True,
        timeout=120,
    )


def _assert_consistent(lake_root: Path) -> None:
    """Every name a fresh process can see reads back verified; fsck agrees."""
    lake = lakelet.open(lake_root)
    for f in lake.ls():
        f.read_bytes()  # raises IntegrityError / NotFoundError on partial content
    report = lake.fsck()
    assert report.ok, report
    leftovers = [p for p in (lake_root / "tmp").iterdir()]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("point", SINGLE_FILE_POINTS)
def test_kill_during_single_file_add(lake, make_file, point) -> None:
    src = make_file("big.bin", os.urandom(9 << 20))  # more than two 4 MiB chunks
    crashed = _add_in_subprocess(lake.root, src, "data/big.bin", point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    _assert_consistent(lake.root)
    again = _add_in_subprocess(lake.root, src, "data/big.bin", None)
    assert again.returncode == 0, again.stderr.decode()
    assert lakelet.open(lake.root).file("data/big.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("point", DIRECTORY_POINTS)
def test_kill_during_directory_add(lake, make_file, point) -> None:
    for i in range(20):
        src = make_file(f"dir/f{i:02}.txt", f"file {i}" * (1 + (i == 3) * (2 << 20)))
    directory = src.parent
    crashed = _add_in_subprocess(lake.root, directory, "many", point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    _assert_consistent(lake.root)
    again = _add_in_subprocess(lake.root, directory, "many", None)
    assert again.returncode == 0, again.stderr.decode()
    reopened = lakelet.open(lake.root)
    assert len(reopened.ls("many/")) == 20
    assert reopened.file("many/f07.txt").read_text() == "file 7"


def test_a_directory_add_killed_before_linking_leaves_nothing_behind(lake, make_file) -> None:
    """Small files are written unnamed (O_TMPFILE) and linked in whole: no temp file to clean."""
    for i in range(5):
        src = make_file(f"dir/f{i}.txt", f"file {i}")
    crashed = _add_in_subprocess(lake.root, src.parent, "many", "blob-before-rename")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    assert list((lake.root / "tmp").iterdir()) == []
    assert not any(p.is_file() for p in (lake.root / "objects").rglob("*"))


def test_kill_at_arbitrary_moments_of_a_large_add(lake, tmp_path) -> None:
    """Not at named points: kill after the process has run for varying times."""
    src = tmp_path / "large.bin"
    with open(src, "wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    for delay in (0.05, 0.15, 0.3, 0.6):
        proc = subprocess.Popen(
            [sys.executable, "-c", ADD_SCRIPT, str(lake.root), str(src), "l"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(delay)  # not synchronisation: the point is to land anywhere
        proc.kill()
        proc.wait()
        _assert_consistent(lake.root)
    done = _add_in_subprocess(lake.root, src, "l", None)
    assert done.returncode == 0
    assert lakelet.open(lake.root).file("l").size == 64 << 20


STAGE_SCRIPT = """
import sys, lakelet


@lakelet.stage
def two_files():
    for name in ("out/a.txt", "out/b.txt"):
        with lakelet.File(name).open("w") as f:
            f.write(name)
    return "done"


lakelet.use(lakelet.open(sys.argv[1]))
print(two_files(), flush=True)
"""


# objects-stored: before any name is bound; names-bound: after the run's segment is written,
# before the index has it
@pytest.mark.parametrize("point, every", [("objects-stored", False), ("names-bound", True)])
def test_kill_while_a_stage_binds_its_outputs(lake, tmp_path, point, every) -> None:
    """A stage's outputs and run record are one segment: a kill leaves none or all of them, and
    the next call runs it again or finds it."""
    script = tmp_path / "stage_script.py"  # a file, not -c: the key is of the same source both times
    script.write_text(STAGE_SCRIPT)

    def run(crash_at):
        return subprocess.run(
            [sys.executable, str(script), str(lake.root)],
            capture_output=True,
            env={**os.environ, "LAKELET_CRASH_AT": crash_at},
            timeout=120,
        )

    crashed = run(point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    names = [f.name for f in lakelet.open(lake.root).ls()]
    records = [n for n in names if n.endswith(".json")]
    outputs = ["out/a.txt", "out/b.txt", "stages/__main__.two_files/"]  # the last: the returned value's
    assert [any(n.startswith(o) for n in names) for o in outputs] == [every] * 3, names
    assert len(records) == every, names  # the run record with them, or nothing
    again = run("")
    assert again.returncode == 0 and again.stdout == b"done\n", again.stderr.decode()
    reopened = lakelet.open(lake.root)
    assert [f.read_text() for f in reopened.ls("out/")] == ["out/a.txt", "out/b.txt"]
    assert sum(f.name.endswith(".json") for f in reopened.ls("stages/")) == 1


# --- kill loops: one lake, one kill -9 per fault point, each at a new batch of work ----------
#
# The process stops itself at the point (LAKELET_FAULT=<point>[@n]:stop), the test sees it
# stopped (waitpid) and kills it: no sleep decides where it dies. After each kill fsck is clean
# and every name a fresh process sees reads exactly the bytes it was bound to; at the end the
# killed work, run again, completes.

OPERATION = """
import sys, lakelet
import pyarrow as pa
op, root, i = sys.argv[1], sys.argv[2], int(sys.argv[3])
lake = lakelet.open(root)
if op == "push":
    lake.push()
elif op == "pull":
    lake.pull()
elif op == "write_dataset":
    rows = pa.table({"batch": [i] * 1000, "row": list(range(1000))})
    lake.write_dataset("ds", rows, partition_by=["batch"])
print("done", flush=True)
"""


def _killed_at(script: Path, op: str, root: Path, i: int, point: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(script), op, str(root), str(i)],
        env={**os.environ, "LAKELET_FAULT": f"{point}:stop"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):  # the point was not reached: the list below is stale
        pytest.fail(f"{op} ended before {point}: {proc.stderr.read().decode()}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]


def _run(script: Path, op: str, root: Path, i: int = 0) -> None:
    done = subprocess.run(
        [sys.executable, str(script), op, str(root), str(i)], capture_output=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout == b"done\n", done.stderr.decode()


def _exact(root: Path, expected: dict[str, bytes]) -> set[str]:
    """fsck is clean and every visible name reads exactly its bytes; returns the names seen."""
    lake = lakelet.open(root)
    assert lake.fsck().ok
    seen = {f.name: f.read_bytes() for f in lake.ls()}
    assert seen == {name: expected[name] for name in seen}
    lake.close()
    return set(seen)


def _batch(tmp_path: Path, i: int) -> Path:
    """Files for the i-th batch: many small ones (a pack) and one over a pack member's limit."""
    folder = tmp_path / f"batch{i}"
    folder.mkdir()
    for k in range(8):
        (folder / f"f{k}.txt").write_bytes(f"batch {i} file {k}\n".encode() * 50)
    (folder / "big.bin").write_bytes(os.urandom((1 << 20) + 1))
    return folder


def _contents(folder: Path, name: str) -> dict[str, bytes]:
    return {f"{name}/{p.name}": p.read_bytes() for p in folder.iterdir()}


PUSH_POINTS = ["remote-file-written@1", "remote-file-written@2", "objects-pushed", "log-appended"]
PULL_POINTS = ["log-applied", "blob-before-rename@1", "blob-after-rename@3", "blob-after-rename@9"]
DATASET_POINTS = ["dataset-files-staged", "manifest-written", "dataset-committed"]


def test_kill_loop_of_push(tmp_path) -> None:
    script = tmp_path / "op.py"
    script.write_text(OPERATION)
    remote = (tmp_path / "remote").as_uri()
    a = lakelet.init(tmp_path / "a", remote=remote)
    config = a.root / "lakelet.toml"
    config.write_text(config.read_text().replace('upload = "write-through"', 'upload = "deferred"'))
    expected: dict[str, bytes] = {}
    for i, point in enumerate(PUSH_POINTS):
        a = lakelet.open(a.root)
        folder = _batch(tmp_path, i)
        a.add(folder, f"b{i}")
        expected |= _contents(folder, f"b{i}")
        a.close()
        _killed_at(script, "push", a.root, i, point)
        _exact(a.root, expected)
        other = lakelet.init(tmp_path / f"other{i}", remote=remote)
        other.sync()
        _exact(other.root, expected)  # what the remote binds, read through another machine
    _run(script, "push", a.root)
    last = lakelet.init(tmp_path / "last", remote=remote)
    last.sync()
    assert _exact(last.root, expected) == set(expected)


def test_kill_loop_of_pull(tmp_path) -> None:
    script = tmp_path / "op.py"
    script.write_text(OPERATION)
    remote = (tmp_path / "remote").as_uri()
    a = lakelet.init(tmp_path / "a", remote=remote)
    b = lakelet.init(tmp_path / "b", remote=remote)
    b.close()
    expected: dict[str, bytes] = {}
    for i, point in enumerate(PULL_POINTS):
        folder = _batch(tmp_path, i)
        a.add(folder, f"b{i}")  # write-through: on the remote at once
        expected |= _contents(folder, f"b{i}")
        _killed_at(script, "pull", b.root, i, point)
        _exact(b.root, expected)
    _run(script, "pull", b.root)
    pulled = lakelet.open(b.root)
    assert all(f.is_local for f in pulled.ls()) and _exact(b.root, expected) == set(expected)


def test_kill_loop_of_write_dataset(tmp_path) -> None:
    script = tmp_path / "op.py"
    script.write_text(OPERATION)
    lake = lakelet.init(tmp_path / "lake")
    lake.close()
    for i, point in enumerate(DATASET_POINTS):
        _killed_at(script, "write_dataset", lake.root, i, point)
        _exact(lake.root, {})
        assert not list((lake.root / "tmp").iterdir())  # the staging folder went with fsck
        _assert_whole_batches(lake.root)
    _run(script, "write_dataset", lake.root, len(DATASET_POINTS))
    assert len(_assert_whole_batches(lake.root)) >= 1


def _assert_whole_batches(root: Path) -> set[int]:
    """Each write's rows are all there or none (a killed write never shows in part)."""
    lake = lakelet.open(root)
    if "ds" not in lake.datasets():
        return set()
    table = lake.dataset("ds").to_arrow()
    batches = set(table.column("batch").to_pylist())
    assert table.num_rows == 1000 * len(batches)
    for batch in batches:
        rows = table.filter(pc.equal(table.column("batch"), batch)).column("row").to_pylist()
        assert sorted(rows) == list(range(1000))
    return batches
