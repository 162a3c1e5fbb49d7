"""lakelet.run: a diamond of stages on in-process, process-pool and real Dask executors."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pickle
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import lakelet

DIAMOND = '''
import os, time, lakelet


def busy(seconds):
    """About `seconds` of CPU work (not a sleep), then the wall-clock interval it took."""
    start = time.time()
    x = 0
    while time.time() - start < seconds:
        x += 1
    return [start, time.time()]


def meet(me, other):
    """With $BARRIER set (a folder): say `me` has started, then wait (at most a minute) for
    `other` to say so too; True if it did. Two stages run one after the other never meet."""
    folder = os.environ.get("BARRIER")
    if not folder:
        return None
    open(os.path.join(folder, me), "w").close()
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(os.path.join(folder, other)):
            return True
        time.sleep(0.01)
    return False


@lakelet.stage
def source():
    return {"values": [1, 2, 3]}


@lakelet.stage(src=source)
def left(src):
    return {"sum": sum(src["values"]), "when": busy(WORK), "pid": os.getpid(), "met": meet("left", "right")}


@lakelet.stage(src=source)
def right(src):
    if os.environ.get("FAIL_RIGHT") == "1":
        raise ValueError("right branch broke")
    return {"max": max(src["values"]), "when": busy(WORK), "pid": os.getpid(), "met": meet("right", "left")}


@lakelet.stage(a=left, b=right)
def join(a, b):
    return {"total": a["sum"] + b["max"], "run": os.environ.get("LAKELET_RUN_ID")}


WORK = 1.0
'''


def _import_source(tmp_path, monkeypatch, prefix: str, source: str):
    """``source`` as a fresh module that worker processes can import too; returns (module, name)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    )  # for worker processes
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(source)
    importlib.invalidate_caches()
    return importlib.import_module(name), name


@pytest.fixture
def diamond(tmp_path, monkeypatch):
    module, name = _import_source(tmp_path, monkeypatch, "diamond", DIAMOND)
    lake = lakelet.init(tmp_path / "lake", remote=(tmp_path / "remote").as_uri())
    lakelet.use(lake)
    yield module, lake
    sys.modules.pop(name, None)


@pytest.mark.parametrize("executor", ["dask", "processes"])
def test_independent_stages_run_in_parallel(diamond, executor, request, tmp_path, monkeypatch) -> None:
    module, lake = diamond
    (tmp_path / "barrier").mkdir()
    monkeypatch.setenv("BARRIER", str(tmp_path / "barrier"))  # workers inherit it (dask: below)
    runner = "processes"
    if executor == "dask":
        runner = request.getfixturevalue("dask_client")
        # the workers find the generated module, and import it before the clock starts:
        # a worker's first import of lakelet and pyarrow takes longer than a stage here
        runner.run(sys.path.insert, 0, str(Path(module.__file__).parent))
        runner.run(importlib.import_module, module.__name__)
        runner.run(os.environ.__setitem__, "BARRIER", str(tmp_path / "barrier"))
    result = lakelet.run(module.join, executor=runner, max_workers=2, run_id=f"r-{executor}")
    assert result == {"total": 9, "run": f"r-{executor}"}
    left, right = module.left(), module.right()  # cached now
    assert left["pid"] != right["pid"]
    # each waited for the other to start: they ran at the same time, whatever the machine's load
    assert left["met"] and right["met"], "independent stages on two workers ran one by one"
    runs = [json.loads(p.read_bytes()) for p in (lake.root / "runs").glob("*.json")]
    assert [sorted(r["ran"]) for r in runs] == [
        sorted([f"{module.__name__}.{s}" for s in ("source", "left", "right", "join")])
    ]


def test_cached_graph_runs_nothing(diamond) -> None:
    module, lake = diamond
    module.WORK = 0.01
    lakelet.run(module.join, run_id="first")
    report = lakelet.run(module.join, run_id="second") and json.loads(
        (lake.root / "runs" / "second.json").read_bytes()
    )
    assert report["ran"] == [] and report["skipped"] == [f"{module.__name__}.join"]
    first = json.loads((lake.root / "runs" / "first.json").read_bytes())
    join = f"{module.__name__}.join"
    skipped = {"status": "skipped", "duration_s": None, "why": "cached", "key": first["stages"][join]["key"]}
    assert report["stages"] == {join: skipped}


def test_a_failing_branch_stops_only_its_descendants_and_resumes(diamond, monkeypatch) -> None:
    module, lake = diamond
    module.WORK = 0.01
    monkeypatch.setenv("FAIL_RIGHT", "1")
    with pytest.raises(lakelet.RunError, match=r"right failed \(ValueError: right branch broke\)") as info:
        lakelet.run(module.join, executor="processes", max_workers=2, run_id="broken")
    assert "Traceback" in info.value.failures[f"{module.__name__}.right"]
    report = json.loads((lake.root / "runs" / "broken.json").read_bytes())
    name = module.__name__
    assert sorted(report["ran"]) == [f"{name}.left", f"{name}.source"]
    assert report["failed"] == [f"{name}.right"] and report["not_run"] == [f"{name}.join"]
    stages = report["stages"]
    right = stages[f"{name}.right"]
    assert right["status"] == "failed" and "right branch broke" in right["why"]
    assert stages[f"{name}.join"] == {"status": "not run", "duration_s": None, "why": f"{name}.right failed"}
    assert stages[f"{name}.left"]["why"] == "never ran" and stages[f"{name}.left"]["duration_s"] > 0
    monkeypatch.setenv("FAIL_RIGHT", "0")
    lakelet.run(module.join, executor="processes", run_id="fixed")
    fixed = json.loads((lake.root / "runs" / "fixed.json").read_bytes())
    assert sorted(fixed["ran"]) == [f"{name}.join", f"{name}.right"]  # left and source came from the cache


FACTORY = """
import lakelet


def make(n):
    @lakelet.stage(name=f"factory/{n}.json")
    def scaled():
        return {"n": n}
    return scaled


one = make(1)
two = make(2)


@lakelet.stage(a=one, b=two)
def both(a, b):
    return [a["n"], b["n"]]
"""


@pytest.fixture
def factory(tmp_path, monkeypatch):
    module, name = _import_source(tmp_path, monkeypatch, "factory", FACTORY)
    lake = lakelet.init(tmp_path / "lake")
    lakelet.use(lake)
    yield module, lake
    sys.modules.pop(name, None)


@pytest.mark.parametrize("executor", [None, "processes"])
def test_stages_made_by_one_factory_run_apart(factory, executor) -> None:
    module, lake = factory
    # one module.qualname for both: a run tells them apart as a plain call does, by the stage
    result = lakelet.run(module.one, module.two, module.both, executor=executor, run_id="made")
    assert result == ({"n": 1}, {"n": 2}, [1, 2])
    assert [json.loads(lake.file(f"factory/{n}.json").read_text()) for n in (1, 2)] == [{"n": 1}, {"n": 2}]
    made = f"{module.__name__}.make.<locals>.scaled"
    report = json.loads((lake.root / "runs" / "made.json").read_bytes())
    assert sorted(report["ran"]) == [
        f"{module.__name__}.both",
        f"{made}[factory/1.json]",
        f"{made}[factory/2.json]",
    ]
    assert lakelet.run(module.two, module.one) == ({"n": 2}, {"n": 1})  # from the cache, each its own


def test_a_stage_no_worker_can_import_is_refused_before_anything_runs(factory) -> None:
    module, lake = factory
    three = module.make(3)  # held by this test only: a worker process has no name to import it by
    with pytest.raises(lakelet.InvalidArgumentError, match="not a module-level name") as error:
        lakelet.run(three, module.one, executor="processes")
    assert "\n" not in str(error.value) and lake.ls() == []
    assert lakelet.run(three) == {"n": 3}  # in this process it needs no name


def test_bad_arguments(diamond) -> None:
    module, _ = diamond
    with pytest.raises(lakelet.InvalidArgumentError):
        lakelet.run(lambda: 1)
    with pytest.raises(lakelet.InvalidArgumentError, match="executor"):
        lakelet.run(module.join, executor="threads-please")


def test_runs_listing_and_the_run_store(diamond) -> None:
    from .conftest import run_lakelet

    module, lake = diamond
    module.WORK = 0.01
    lakelet.run(module.join, run_id="listed")
    assert module.join()["run"] == "listed"  # stages see their run id (and lake.pipeline())
    out = run_lakelet("runs", "--json", env={"LAKELET_HOME": str(lake.root)})
    assert [r["run_id"] for r in json.loads(out.stdout)] == ["listed"]
    with pytest.raises(lakelet.InvalidNameError):
        lake.pipeline()  # outside a run there is no current run


def test_gc_drops_expired_runs_and_unreferenced_objects(tmp_path, make_file) -> None:
    import os as _os

    from .conftest import run_lakelet

    lake = lakelet.init(tmp_path / "gc-lake")
    kept = lake.add(make_file("kept.txt", "kept"), "kept.txt")
    lake.pipeline("old-run").puts("x", b"old")
    lake.pipeline("new-run").puts("x", b"new")
    old_dir = lake.root / "scopes" / "pipeline" / "old-run"
    _os.utime(old_dir, (1, 1))
    orphan = lake.root / "objects" / "blake3" / "ab" / ("c" * 62)  # bytes no name refers to
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    env = {"LAKELET_HOME": str(lake.root)}
    dry = run_lakelet("gc", "--ttl", "1d", "--dry-run", env=env)
    assert dry.returncode == 0 and b"would remove 1 pipeline runs, 0 local objects" in dry.stdout
    assert orphan.exists() and old_dir.exists()
    real = run_lakelet("gc", "--ttl", "1d", env=env)
    assert real.returncode == 0 and b"removed 1 pipeline runs, 0 local objects" in real.stdout
    assert orphan.exists() and not old_dir.exists()  # younger than the grace: maybe an add's
    report = lake.gc(timedelta(days=7), now=datetime.now(UTC) + timedelta(hours=25))
    assert report.objects == ["blake3:ab" + "c" * 62] and not orphan.exists()
    assert lake.pipeline("new-run").gets("x") == b"new" and kept.read_text() == "kept"


def test_remote_gc_spares_fresh_uploads_another_machine_may_be_naming(tmp_path, make_file) -> None:
    import os as _os

    remote_dir = tmp_path / "remote"
    lake = lakelet.init(tmp_path / "a", remote=remote_dir.as_uri())
    named = lake.add(make_file("named.txt", "named"), "named.txt")
    fresh = remote_dir / "objects" / "blake3" / "ab" / ("1" * 62)  # just uploaded, name not yet bound
    stale = remote_dir / "objects" / "blake3" / "ab" / ("2" * 62)
    for path in (fresh, stale):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"bytes")
    _os.utime(stale, (1, 1))
    report = lake.gc(timedelta(days=7), remote=True)
    assert report.remote_objects == ["blake3:ab" + "2" * 62]
    assert fresh.exists() and not stale.exists()
    algo, hexdigest = named.digest.split(":")
    assert (remote_dir / "objects" / algo / hexdigest[:2] / hexdigest[2:]).exists()


CHAIN = '''
import lakelet


class Version:
    """A version= that counts its reads: a key is a digest of str(version), one read per key worked out."""

    reads = {}

    def __init__(self, stage):
        self.stage = stage

    def __str__(self):
        Version.reads[self.stage] = Version.reads.get(self.stage, 0) + 1
        return "1"


@lakelet.stage(raw=lakelet.raw("{raw}"), version=Version("a"))
def a(raw):
    with open(raw) as f:
        return f.read().split()


@lakelet.stage(x=a, version=Version("b"))
def b(x):
    return x + ["b"]


@lakelet.stage(x=b, version=Version("c"))
def c(x):
    return x + ["c"]
'''

EDITED = """
from pathlib import Path
import lakelet

RAW, LOG = "{raw}", "{log}"


def ran(stage):
    with open(LOG, "a") as log:
        log.write(stage + "\\n")


@lakelet.stage
def edit():
    ran("edit")
    Path(RAW).write_text("2")  # the user saving the input after the run worked its keys out
    return "edited"


@lakelet.stage(raw=lakelet.raw(RAW), after=edit)
def read(raw, after):
    ran("read")
    return int(Path(raw).read_text())


@lakelet.stage(n=read)
def report(n):
    ran("report")
    Path(RAW).write_text("3")  # and again, once report's worker worked its own key out
    return n
"""


@pytest.fixture
def stage_module(tmp_path, monkeypatch):
    """Writes stage source to a module of its own, importable by worker processes too."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    names = []

    def write(source: str):
        names.append(f"stages_{uuid.uuid4().hex[:8]}")
        (tmp_path / f"{names[-1]}.py").write_text(source)
        importlib.invalidate_caches()
        return importlib.import_module(names[-1])

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_a_run_works_out_each_key_once(stage_module, tmp_path) -> None:
    """Once by the parent, per run: it was 4, 3 and 2 times for a, b and c on a first run, twice each on a
    cached one. The workers work out their own keys when they run: other processes here, other counts."""
    raw = tmp_path / "numbers.txt"
    raw.write_text("1 2")
    module = stage_module(CHAIN.replace("{raw}", str(raw)))
    lakelet.use(lakelet.init(tmp_path / "lake"))
    assert lakelet.run(module.c, executor="processes", max_workers=1) == ["1", "2", "b", "c"]
    assert module.Version.reads == {"a": 1, "b": 1, "c": 1}
    module.Version.reads.clear()
    assert lakelet.run(module.c) == ["1", "2", "b", "c"]  # all cached: nothing submitted
    assert module.Version.reads == {"a": 1, "b": 1, "c": 1}


def test_a_raw_input_edited_during_a_run(stage_module, tmp_path) -> None:
    """A local file can change while a run goes on (here stages edit it, to be deterministic). Each stage
    runs once, in its worker; run() returns what the target's worker stored; and no result is stored
    under a key that names content its stage did not read."""
    raw, log = tmp_path / "input.txt", tmp_path / "ran.log"
    raw.write_text("1")
    module = stage_module(EDITED.replace("{raw}", str(raw)).replace("{log}", str(log)))
    lakelet.use(lakelet.init(tmp_path / "lake"))
    assert lakelet.run(module.report) == 2  # what read read when it ran
    assert log.read_text().split() == ["edit", "read", "report"]
    raw.write_text("1")
    assert module.read() == 1  # the parent's first key for read: never stored, so read runs now
    assert log.read_text().split() == ["edit", "read", "report", "read"]


def test_a_worker_that_finds_its_stage_cached_reports_it_skipped(diamond) -> None:
    """Bound after the parent looked (by another run or machine): the worker runs nothing and says so."""
    from lakelet.runner._executors import lake_spec, run_stage

    module, lake = diamond
    module.source()
    done = run_stage(module.__name__, "source", lake_spec(lake), "r1")
    key, _ = module.source.key(lake)
    record, _ = module.source.current_run(lake, key)
    assert done == {"status": "skipped", "duration_s": None, "why": "cached", "key": key, "record": record}


def test_a_worker_that_cannot_see_the_lake_shares_through_s3(s3_server, tmp_path, monkeypatch) -> None:
    """A worker on another machine: it opens its own cache root on the remote."""
    from lakelet.runner._run import run_stage

    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(tmp_path))
    name = f"remote_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import lakelet\n\n@lakelet.stage\ndef answer():\n    return {'value': 42}\n"
    )
    module = importlib.import_module(name)
    url = s3_server.url(f"run-{uuid.uuid4().hex[:8]}")
    parent = lakelet.init(tmp_path / "parent", remote=url)
    monkeypatch.setenv("LAKELET_WORKER_ROOT", str(tmp_path / "worker-cache"))
    spec = {"root": str(tmp_path / "elsewhere"), "remote": url, "storage_options": {}}
    ran = run_stage(name, "answer", spec, "r1")
    assert ran["status"] == "ran" and ran["why"] == "never ran"
    assert (tmp_path / "worker-cache" / "lakelet.toml").is_file()
    with lakelet.use(parent):
        key, _ = module.answer.key(parent)
        assert parent.exists(f"stages/{name}.answer/{key[:40]}.json")  # bound by the worker, via S3
        assert module.answer() == {"value": 42}
    sys.modules.pop(name, None)


class Recorder:
    """An observer: any class with the four methods of lakelet.RunObserver will do."""

    def __init__(self) -> None:
        self.trace: list[str] = []  # "started", "start <stage>", "<status> <stage>", "finished"
        self.run: lakelet.RunStarted | None = None
        self.events: list[lakelet.StageFinished] = []
        self.report: lakelet.RunReport | None = None

    def started(self, run: lakelet.RunStarted) -> None:
        self.run = run
        self.trace.append("started")

    def stage_started(self, event: lakelet.StageStarted) -> None:
        self.trace.append(f"start {_short(event.stage)}")

    def stage_finished(self, event: lakelet.StageFinished) -> None:
        self.events.append(event)
        self.trace.append(f"{event.status} {_short(event.stage)}")

    def finished(self, report: lakelet.RunReport) -> None:
        self.report = report
        self.trace.append("finished")


def _short(node_id: str) -> str:
    return node_id.rsplit(".", 1)[-1]


def _in_dependency_order(seen: Recorder) -> None:
    """Started first, finished last; a stage starts once what it reads ran, and finishes after it starts."""
    trace = seen.trace
    assert trace[0] == "started" and trace[-1] == "finished" and trace.count("finished") == 1
    for node in seen.run.graph.nodes:
        name = _short(node.id)
        if f"start {name}" in trace:
            start = trace.index(f"start {name}")
            assert all(trace.index(f"ran {_short(up)}") < start for up in node.upstream), trace
            assert [i for i, t in enumerate(trace) if t.endswith(f" {name}") and i > start], trace


def test_an_observer_hears_each_stage_start_and_finish_in_order(diamond) -> None:
    module, lake = diamond
    module.WORK = 0.01
    seen = Recorder()
    assert lakelet.run(module.join, run_id="watched", observer=seen)["total"] == 9
    assert seen.trace == [
        "started",
        "start source",
        "ran source",
        "start left",
        "ran left",
        "start right",
        "ran right",
        "start join",
        "ran join",
        "finished",
    ]
    n = module.__name__
    assert seen.run.run_id == "watched"
    assert seen.run.to_run == (f"{n}.source", f"{n}.left", f"{n}.right", f"{n}.join")
    assert all(e.duration_s > 0 and e.why == "never ran" and e.key for e in seen.events)
    saved = json.loads((lake.root / "runs" / "watched.json").read_bytes())
    assert seen.report.__dict__ == saved  # told once the report is saved
    assert {e.stage: e.key for e in seen.events} == {s: saved["stages"][s]["key"] for s in saved["ran"]}


def test_an_observer_hears_a_cached_run_as_skipped(diamond) -> None:
    module, _ = diamond
    module.WORK = 0.01
    first = Recorder()
    lakelet.run(module.join, observer=first)
    again = Recorder()
    lakelet.run(module.join, observer=again)
    assert again.trace == ["started", "skipped join", "finished"]
    assert again.run.to_run == () and again.run.graph == first.run.graph
    join = f"{module.__name__}.join"
    assert again.events == [lakelet.StageFinished(join, "skipped", None, "cached", first.events[-1].key)]
    assert again.report.skipped == [join] and again.report.ran == []


@pytest.mark.parametrize("executor", [None, "processes"])
def test_an_observer_hears_a_failure_and_what_it_stopped(diamond, monkeypatch, executor) -> None:
    module, _ = diamond
    module.WORK = 0.01
    monkeypatch.setenv("FAIL_RIGHT", "1")
    seen = Recorder()
    with pytest.raises(lakelet.RunError, match="right failed"):
        lakelet.run(module.join, executor=executor, max_workers=2, observer=seen)
    _in_dependency_order(seen)
    assert sorted(seen.trace[1:-1]) == sorted(
        [
            "start source",
            "ran source",
            "start left",
            "ran left",
            "start right",
            "failed right",
            "not run join",
        ]
    )
    assert seen.trace.index("failed right") < seen.trace.index("not run join")
    right, join = (f"{module.__name__}.{s}" for s in ("right", "join"))
    events = {e.stage: e for e in seen.events}
    assert events[right] == lakelet.StageFinished(right, "failed", None, "ValueError: right branch broke")
    assert events[join] == lakelet.StageFinished(join, "not run", None, f"{right} failed")
    assert seen.report.failed == [right] and seen.report.not_run == [join]
    if executor is None:  # one stage at a time, in order
        assert seen.trace == [
            "started",
            "start source",
            "ran source",
            "start left",
            "ran left",
            "start right",
            "failed right",
            "not run join",
            "finished",
        ]


def test_an_observer_overrides_only_what_it_needs(diamond) -> None:
    module, lake = diamond
    module.WORK = 0.01

    class Finishes(lakelet.RunObserver):
        def __init__(self) -> None:
            self.done: list[str] = []

        def stage_finished(self, event: lakelet.StageFinished) -> None:
            self.done.append(_short(event.stage))

    seen = Finishes()
    lakelet.run(module.left, observer=seen)
    assert seen.done == ["source", "left"]
    with pytest.raises(lakelet.InvalidArgumentError, match="observer= lacks started, stage_started"):
        lakelet.run(module.join, observer=object())
    assert not lake.exists(f"stages/{module.__name__}.join")  # refused before anything ran


def test_the_graph_is_plain_data(diamond) -> None:
    module, _ = diamond
    module.WORK = 0.01
    seen = Recorder()
    lakelet.run(module.join, module.left, observer=seen)
    graph = seen.run.graph
    source, left, right, join = (f"{module.__name__}.{s}" for s in ("source", "left", "right", "join"))
    assert graph == lakelet.StageGraph(
        nodes=(
            lakelet.StageNode(source, source, ()),
            lakelet.StageNode(left, left, (source,)),
            lakelet.StageNode(right, right, (source,)),
            lakelet.StageNode(join, join, (left, right)),
        ),
        targets=(join, left),
    )
    assert set(graph.edges) == {(source, left), (source, right), (left, join), (right, join)}
    assert graph.downstream(source) == (left, right) and graph.node(join).upstream == (left, right)
    as_json = json.loads(json.dumps(dataclasses.asdict(graph)))  # strings and tuples, no Stage
    assert as_json["targets"] == [join, left]
    assert as_json["nodes"][-1] == {"id": join, "qualname": join, "upstream": [left, right]}
    assert pickle.loads(pickle.dumps(graph)) == graph
