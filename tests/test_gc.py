"""gc and stage ``ttl=``: expired outputs go unless something live read them, and their stage reruns.

Expiry is judged at the ``now`` passed to ``collect`` (hours or years ahead),
never by sleeping; the CLI tests use a stage with a 1 ms ttl, long past when
the subprocess starts.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import lakelet

from .conftest import WhenDone, run_lakelet, snapshot

PIPELINE = """
import lakelet


@lakelet.stage(ttl="1h")
def scratch():
    return {"rows": [1, 2, 3]}


@lakelet.stage(ttl="30d")
def monthly():
    return {"rows": [4]}


@lakelet.stage
def forever():
    return {"rows": [5]}


@lakelet.stage(ttl="1h")
def raw_rows():
    return {"rows": [6, 7]}


@lakelet.stage(ttl="1h", src=raw_rows)
def cleaned(src):
    return {"rows": [r * 10 for r in src["rows"]]}


@lakelet.stage(src=cleaned)
def report(src):
    return {"total": sum(src["rows"])}


@lakelet.stage(ttl="1h")
def tmp_a():
    return {"rows": [8]}


@lakelet.stage(ttl="1h", src=tmp_a)
def tmp_b(src):
    return {"rows": src["rows"] * 2}


@lakelet.stage(ttl=0.001)
def blink():
    return {"rows": [9]}
"""

WEEK = timedelta(days=7)


def _later(**delta: float) -> datetime:
    return datetime.now(UTC) + timedelta(**(delta or {"hours": 2}))


@pytest.fixture
def module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"gcpipe_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(PIPELINE)
    importlib.invalidate_caches()
    yield importlib.import_module(name)
    sys.modules.pop(name, None)


@pytest.fixture
def pipeline(module, tmp_path):
    lake = lakelet.init(tmp_path / "lake")
    with lakelet.use(lake):
        yield module, lake


@pytest.fixture
def ran(caplog):
    """The stages that ran since the last call, from the `lakelet.stage` log."""
    caplog.set_level(logging.INFO, logger="lakelet.stage")

    def stages() -> list[str]:
        out = [
            r.getMessage().rsplit(".", 1)[-1]
            for r in caplog.records
            if r.name == "lakelet.stage" and r.getMessage().startswith("running ")
        ]
        caplog.clear()
        return sorted(out)

    return stages


def _names(lake: lakelet.Lake, module, stage: str) -> list[str]:
    """[run record, output] of a stage that ran once."""
    return [f.name for f in lake.ls(f"stages/{module.__name__}.{stage}/")]


def test_an_expired_output_goes_and_its_stage_reruns(pipeline, ran) -> None:
    module, lake = pipeline
    module.scratch()
    run_record, output = _names(lake, module, "scratch")
    blob = lake.file(output).path
    record = json.loads(lake.file(run_record).read_bytes())
    assert record["ttl_s"] == 3600 and lake.file(output).meta["expires_at"] == record["expires_at"]
    ran()

    report = lake.gc(WEEK, now=_later())
    assert report.stage_runs == [run_record] and report.stage_outputs == [output]
    assert not lake.exists(output) and not lake.exists(run_record)
    assert blob.exists() and report.objects == []  # bytes younger than the grace stay a day
    report = lake.gc(WEEK, now=_later(days=2))
    assert not blob.exists() and report.bytes >= len(b'{"rows":[1,2,3]}')
    # lineage stays: the output's tombstone names its run, whose record keeps its bytes
    with pytest.raises(lakelet.NotFoundError, match="was removed"):
        lake.file(output).read_bytes()
    tomb = lake.context.lookup("lake", output)
    assert tomb.meta["run"] == run_record and tomb.meta["expired_at"] == record["expires_at"]
    with lake.context.open_record(lake.context.lookup("lake", run_record)) as f:
        assert json.loads(f.read())["key"] == record["key"]

    assert module.scratch() == {"rows": [1, 2, 3]}
    assert ran() == ["scratch"]
    assert module.scratch() == {"rows": [1, 2, 3]}
    assert ran() == []
    # names are never rebound: the rerun bound the key's second generation
    second = run_record.removesuffix(".json") + "-g2"
    assert _names(lake, module, "scratch") == [f"{second}.json", f"{second}/output.json"]


def test_unexpired_and_ttl_less_outputs_stay(pipeline, ran) -> None:
    module, lake = pipeline
    module.monthly()
    module.forever()
    monthly, forever = _names(lake, module, "monthly"), _names(lake, module, "forever")
    assert "expires_at" not in json.loads(lake.file(forever[0]).read_bytes())
    ran()

    report = lake.gc(WEEK, now=_later())
    assert (report.stage_runs, report.stage_outputs, report.kept) == ([], [], {})
    report = lake.gc(WEEK, now=_later(days=365 * 100))
    assert report.stage_runs == [monthly[0]] and report.stage_outputs == [monthly[1]]
    assert all(lake.exists(n) for n in forever)
    module.forever()
    assert ran() == []


def test_an_expired_output_that_a_live_run_read_stays(pipeline, ran) -> None:
    module, lake = pipeline
    module.report()  # report (no ttl) read cleaned, which read raw_rows: both expire at +1 h
    module.tmp_b()  # tmp_b read tmp_a: both expire, and nothing live read either
    ran()
    raw_rows, cleaned, consumer, tmp_a, tmp_b = (
        _names(lake, module, s)[0] for s in ("raw_rows", "cleaned", "report", "tmp_a", "tmp_b")
    )

    report = lake.gc(WEEK, now=_later())
    assert report.kept == {cleaned: f"{consumer} read its output", raw_rows: f"{cleaned} read its output"}
    assert sorted(report.stage_runs) == sorted([tmp_a, tmp_b])
    module.report()
    module.cleaned()
    module.raw_rows()
    assert ran() == []
    module.tmp_b()
    assert ran() == ["tmp_a", "tmp_b"]


def test_dry_run_changes_nothing_and_predicts_the_real_run(pipeline) -> None:
    module, lake = pipeline
    module.scratch()
    module.report()
    module.tmp_b()
    files, names = snapshot(lake.root), [f.name for f in lake.ls()]
    now = _later(days=2)  # past the grace of the objects too

    dry = lake.gc(WEEK, dry_run=True, now=now)
    assert snapshot(lake.root) == files and [f.name for f in lake.ls()] == names
    assert len(dry.stage_runs) == 3 and len(dry.stage_outputs) == 3 and dry.bytes > 0
    real = lake.gc(WEEK, now=now)
    fields = ("stage_runs", "stage_outputs", "kept", "objects", "bytes")
    assert [getattr(dry, f) for f in fields] == [getattr(real, f) for f in fields]
    assert snapshot(lake.root) != files


def test_cli_names_what_went(pipeline) -> None:
    module, lake = pipeline
    module.blink()  # expires 1 ms after it ran
    module.forever()
    run_record, output = _names(lake, module, "blink")
    env = {"LAKELET_HOME": str(lake.root)}
    files = snapshot(lake.root)

    assert run_lakelet("gc", "--ttl", "7x", env=env).returncode == 1  # bad input changes nothing
    dry = run_lakelet("gc", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr.decode()
    listed = json.loads(dry.stdout)
    assert listed["dry_run"] and listed["stage_runs"] == [run_record] and listed["stage_outputs"] == [output]
    assert snapshot(lake.root) == files

    real = run_lakelet("gc", env=env)
    assert real.returncode == 0, real.stderr.decode()
    text = real.stdout.decode()
    # its bytes stay for the grace (a day): the CLI's gc moves no clock
    assert (
        "removed 0 pipeline runs, 0 local objects, 0 remote objects (0 B); 1 expired stage runs "
        "(1 outputs)" in text
    )
    assert f"  {run_record}\n" in text and f"  {output}\n" in text
    assert not lake.exists(output) and all(lake.exists(n) for n in _names(lake, module, "forever"))


CRASHING_GC = """
import sys, lakelet
from datetime import datetime, timedelta
lakelet.open(sys.argv[1]).gc(timedelta(days=7), now=datetime.fromisoformat(sys.argv[2]))
"""


def test_a_gc_killed_between_its_steps_is_finished_by_the_next(pipeline, ran) -> None:
    module, lake = pipeline
    module.scratch()
    run_record, output = _names(lake, module, "scratch")
    blob = lake.file(output).path
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_GC, str(lake.root), _later().isoformat()],
        env={**os.environ, "LAKELET_CRASH_AT": "gc-runs-retired"},
        capture_output=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    assert not lake.exists(run_record) and lake.exists(output)  # a miss, never a hit without output
    ran()
    module.scratch()
    assert ran() == ["scratch"]

    report = lake.gc(WEEK)
    assert report.stage_runs == [] and report.stage_outputs == [output] and not lake.exists(output)
    second = run_record.removesuffix(".json") + "-g2"
    assert _names(lake, module, "scratch") == [f"{second}.json", f"{second}/output.json"]
    assert blob.exists() and report.objects == []  # the second generation holds the same bytes


def _remote_object(remote_dir: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":")
    return remote_dir / "objects" / algorithm / hexdigest[:2] / hexdigest[2:]


def test_expiry_is_shared_through_the_remote(module, tmp_path, ran) -> None:
    remote_dir = tmp_path / "remote"
    a = lakelet.init(tmp_path / "a", remote=remote_dir.as_uri())
    b = lakelet.init(tmp_path / "b", remote=remote_dir.as_uri())
    with lakelet.use(a):
        module.scratch()
        module.cleaned()
    with lakelet.use(b):  # another machine reads a's cleaned; a has not synced since
        module.report()
    assert ran() == ["cleaned", "raw_rows", "report", "scratch"]
    run_record, output = _names(a, module, "scratch")
    digest = a.file(output).digest

    report = a.gc(WEEK, remote=True, now=_later())
    assert report.stage_runs == [run_record]  # gc learned b's report, so cleaned and raw_rows stay
    assert sorted(report.kept) == sorted(_names(a, module, s)[0] for s in ("cleaned", "raw_rows"))
    assert report.remote_objects == [] and _remote_object(remote_dir, digest).exists()  # the grace
    os.utime(_remote_object(remote_dir, digest), (1, 1))
    report = a.gc(WEEK, remote=True, now=_later())
    assert report.remote_objects == [digest] and not _remote_object(remote_dir, digest).exists()
    record_digest = a.context.lookup("lake", run_record).digest
    assert _remote_object(remote_dir, record_digest).exists()  # the run record is the lineage

    b.sync()
    assert not b.exists(output)
    with lakelet.use(b):
        module.scratch()
    with lakelet.use(a):
        module.scratch()  # finds the generation b bound, through the remote
        module.report()
    assert ran() == ["scratch"]


ADD = """
import sys, lakelet
lakelet.open(sys.argv[1]).add(sys.argv[2], sys.argv[3])
"""


def _tree(root: Path, n: int = 8) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"f{i}.txt").write_text(f"file {i}")
    return root


def _objects(lake: lakelet.Lake) -> list[Path]:
    return sorted(p for p in (lake.root / "objects").rglob("*") if p.is_file())


def test_objects_stored_by_an_add_not_yet_named_outlive_a_gc_for_the_grace(lake, tmp_path) -> None:
    """An add stores its objects, then binds their names: killed in between, it leaves what an
    add still running would have. A gc keeps those for a day; past that they are garbage."""
    tree = _tree(tmp_path / "src")
    crashed = subprocess.run(
        [sys.executable, "-c", ADD, str(lake.root), str(tree), "many"],
        env={**os.environ, "LAKELET_CRASH_AT": "objects-stored"},
        capture_output=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    stored = _objects(lake)
    assert len(stored) == 8 and lake.ls() == []

    report = lake.gc(WEEK)
    assert report.objects == [] and _objects(lake) == stored
    report = lake.gc(WEEK, now=_later(hours=23))
    assert report.objects == [] and _objects(lake) == stored

    report = lake.gc(WEEK, now=_later(hours=25))
    assert len(report.objects) == 8 and _objects(lake) == []
    lake.add(tree, "many")
    assert [f.read_text() for f in lake.ls("many/")] == [f"file {i}" for i in range(8)]


def test_a_gc_between_storing_and_binding_keeps_the_add_whole(lake, tmp_path) -> None:
    gc = WhenDone(lambda: lakelet.open(lake.root).gc(WEEK))
    files = lake.add(_tree(tmp_path / "src"), "many", progress=gc)
    assert [f.read_text() for f in files] == [f"file {i}" for i in range(8)]
    assert gc.result is not None and gc.result.objects == []
    assert lakelet.open(lake.root).fsck().ok


def test_an_add_whose_objects_a_gc_deleted_before_binding_binds_nothing(lake, tmp_path) -> None:
    """Past the grace (an add that reused old unreferenced objects, or ran for a day), gc may
    delete what an add stored; the add then fails whole rather than name missing content."""
    tree = _tree(tmp_path / "src")
    gc = WhenDone(lambda: lakelet.open(lake.root).gc(WEEK, now=_later(days=2)))
    with pytest.raises(lakelet.NotFoundError, match="deleted by a `lakelet gc`.*add it again"):
        lake.add(tree, "many", progress=gc)
    assert gc.result is not None and len(gc.result.objects) == 8
    assert lake.ls() == [] and lakelet.open(lake.root).ls() == []
    lake.add(tree, "many")
    assert [f.read_text() for f in lake.ls("many/")] == [f"file {i}" for i in range(8)]


def test_gc_remote_deletes_the_temps_of_killed_writers_once_past_the_grace(tmp_path) -> None:
    """A writer killed between writing its temp and renaming it leaves the temp in the
    file:// remote's tmp/; gc --remote removes it after the grace and touches nothing else."""
    remote_dir = tmp_path / "remote"
    lake = lakelet.init(tmp_path / "lake", remote=remote_dir.as_uri())
    lake.add(_tree(tmp_path / "kept", 2), "kept")
    for i in range(2):  # two killed writers: two leftover temps
        source = _tree(tmp_path / f"t{i}", 1)
        crashed = subprocess.run(
            [sys.executable, "-c", ADD, str(lake.root), str(source), f"t{i}"],
            env={**os.environ, "LAKELET_CRASH_AT": "remote-file-written"},
            capture_output=True,
            timeout=120,
        )
        assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    stale, fresh = sorted((remote_dir / "tmp").iterdir())
    now = datetime.fromtimestamp(fresh.stat().st_mtime, UTC) + timedelta(hours=23)
    os.utime(stale, (1, (now - timedelta(hours=25)).timestamp()))
    keys, size = snapshot(remote_dir), stale.stat().st_size  # every key (tmp/ left out)

    dry = lake.gc(WEEK, dry_run=True, remote=True, now=now)
    assert (dry.remote_temps, dry.bytes) == ([f"tmp/{stale.name}"], size) and stale.exists()
    report = lake.gc(WEEK, remote=True, now=now)
    assert (report.remote_temps, report.bytes) == ([f"tmp/{stale.name}"], size)
    assert sorted((remote_dir / "tmp").iterdir()) == [fresh]  # younger than the grace at now
    assert snapshot(remote_dir) == keys
    assert [f.read_text() for f in lake.ls("kept/")] == ["file 0", "file 1"]
