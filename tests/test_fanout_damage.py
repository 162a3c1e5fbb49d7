"""Stage.map over what is damaged or shared: outputs and run records torn or removed since they
were bound, a re-run that fails in an early window, another machine's runs on the remote, two
threads on one lake. (Written from a review's findings.)"""

from __future__ import annotations

import threading

import pytest

import lakelet
from lakelet.lake import _run_lookup
from lakelet.lake._run_lookup import current_run
from lakelet.runner import _map
from lakelet.stages import _loaded
from lakelet.storage._scopes import LAKE

from .conftest import stage_module

STAGES = """
import os, lakelet

@lakelet.stage(format="json")
def sq(x):
    with open(os.path.join(os.environ["DAMAGE_MARKS"], f"{x}-{os.urandom(4).hex()}"), "w"):
        pass
    if str(x) in os.environ.get("DAMAGE_FAIL", "").split(","):
        raise ValueError(f"item {x} broke")
    return {"x": x}
"""


@pytest.fixture
def stages(tmp_path, monkeypatch):
    """The stage above in a fresh module (worker processes import it too), and the items it ran."""
    module, marks = stage_module(tmp_path, monkeypatch, STAGES, "DAMAGE_MARKS")

    def ran() -> list[int]:
        out = sorted(int(p.name.split("-")[0]) for p in marks.iterdir())
        for p in marks.iterdir():
            p.unlink()
        return out

    return module, ran


def _forget() -> None:
    """What a new process remembers: nothing."""
    _run_lookup._parsed.clear()
    _loaded._values.clear()


def _tear(path) -> None:
    path.chmod(0o644)
    path.write_bytes(path.read_bytes()[:-1])


@pytest.mark.parametrize("executor", [None, "processes"])
@pytest.mark.parametrize("damage", ["rm-output", "torn-output", "torn-record", "rm-record"])
def test_a_damaged_item_runs_again_once_and_the_others_stay_cached(stages, lake, executor, damage) -> None:
    module, ran = stages
    lakelet.use(lake)
    assert module.sq.map(range(4), executor=executor) == [{"x": x} for x in range(4)]
    ran()
    key = module.sq.key_for(lake, (1,), {}, {}).digest
    name, run = current_run(lake.context, module.sq.qualname, key)
    assert run is not None
    record = lake.context.lookup(LAKE, name)
    output = lake.context.lookup(LAKE, run.returned.names[0])
    if damage == "rm-output":
        lake.rm(output.name, force=True)
    elif damage == "rm-record":
        lake.rm(name, force=True)
    else:
        _tear(lake.context.blob_path(output if damage == "torn-output" else record))
    _forget()
    items = [0, 1, 1, 2, 3]
    assert module.sq.map(items, executor=executor) == [{"x": x} for x in items]
    assert ran() == [1]
    assert module.sq.map(items, executor=executor) == [{"x": x} for x in items]
    assert ran() == []


def test_a_rerun_that_fails_in_an_early_window_does_not_stop_later_windows(stages, lake, monkeypatch) -> None:
    module, ran = stages
    lakelet.use(lake)
    monkeypatch.setattr(_map, "_WINDOW", 4)
    module.sq.map(range(4))
    ran()
    key = module.sq.key_for(lake, (0,), {}, {}).digest
    _, run = current_run(lake.context, module.sq.qualname, key)
    assert run is not None
    _tear(lake.context.blob_path(lake.context.lookup(LAKE, run.returned.names[0])))
    _forget()
    monkeypatch.setenv("DAMAGE_FAIL", "0")
    with pytest.raises(lakelet.RunError) as info:
        module.sq.map([0, 1, 2, 3, 10, 11, 12, 13])
    assert list(info.value.failures) == [f"{module.__name__}.sq[0]"]
    assert ran() == [0, 10, 11, 12, 13]  # the second window ran
    monkeypatch.setenv("DAMAGE_FAIL", "")
    assert module.sq.map([0, 1, 10]) == [{"x": 0}, {"x": 1}, {"x": 10}]
    assert ran() == [0]


def test_a_map_finds_the_runs_another_machine_made_on_the_remote(stages, machine) -> None:
    module, ran = stages
    with lakelet.use(machine("a")):
        assert module.sq.map(range(6)) == [{"x": x} for x in range(6)]
    assert ran() == list(range(6))
    with lakelet.use(machine("b")):
        assert module.sq.map(list(range(8)) * 2) == [{"x": x} for x in range(8)] * 2
    assert ran() == [6, 7]


def test_two_threads_mapping_the_same_items_on_one_lake(stages, lake, monkeypatch) -> None:
    module, _ = stages
    monkeypatch.setattr(_map, "_WINDOW", 16)
    out: dict[int, object] = {}
    items = [x % 150 for x in range(400)]

    def go(t: int) -> None:
        try:
            with lakelet.use(lake):
                for _ in range(3):
                    out[t] = module.sq.map(items)
        except Exception as e:  # shown by the assert below
            out[t] = e

    threads = [threading.Thread(target=go, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == {0: [{"x": x} for x in items], 1: [{"x": x} for x in items]}


RACED = """
import os, threading, lakelet

BOTH = threading.Barrier(2, timeout=60)
RACING = {"on": False}


@lakelet.stage(cache=False)
def stamp(x):
    if RACING["on"]:
        BOTH.wait()  # two calls of the key at once: both take the same free generation
    return os.urandom(8).hex()


@lakelet.stage
def many(n):
    for i in range(n):  # n implicit outputs under the key's generation, besides the value
        with lakelet.File().open("w") as o:
            o.write(str(i))
    return n
"""


def _race(lakes, call) -> dict[int, object]:
    out: dict[int, object] = {}

    def go(t: int) -> None:
        with lakelet.use(lakes[t]):
            out[t] = call()

    threads = [threading.Thread(target=go, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_cache_false_calls_racing_for_a_generation_each_return_their_own_run(tmp_path, monkeypatch) -> None:
    # Each cache=False call is a run of its own: one that finds its generation taken by another
    # returns its own value, never the other's nor an older call's. (Found by a review.)
    module, _ = stage_module(tmp_path, monkeypatch, RACED, "RACED_MARKS")
    remote = (tmp_path / "remote").as_uri()
    machines = [lakelet.init(tmp_path / f"machine{t}", remote=remote) for t in range(2)]
    with lakelet.use(machines[0]):
        earlier = module.stamp(1)  # the key's first generation
    module.RACING["on"] = True
    by_calls = _race(machines, lambda: module.stamp(1))
    lake = lakelet.init(tmp_path / "lake")
    by_maps = _race([lake, lake], lambda: module.stamp.map([1])[0])
    assert earlier not in by_calls.values() and by_calls[0] != by_calls[1]
    assert by_maps[0] != by_maps[1]


def test_a_cached_call_reads_only_its_own_names_of_its_key(lake, tmp_path, monkeypatch) -> None:
    # A cached call looks up its run record and its value's name, not every name its run wrote:
    # a damaged index row of another file of the run leaves the call a hit. (A review found a
    # call reading all 2,000 names of a run that wrote 2,000 files.)
    import sqlite3

    module, _ = stage_module(tmp_path, monkeypatch, RACED, "RACED_MARKS")
    lakelet.use(lake)
    assert module.many(3) == 3
    written = [
        f.name for f in lake.ls("stages/") if "/output." not in f.name and not f.name.endswith(".json")
    ]
    assert len(written) == 3
    lake.context.catalog.close()
    with sqlite3.connect(lake.root / "index.sqlite") as db:
        db.execute("UPDATE name_rows SET digest = x'00' WHERE name = ?", (written[0],))
    _forget()
    assert lakelet.open(lake.root).file(written[1]).size > 0  # the index still answers for others
    with lakelet.use(lakelet.open(lake.root)):
        assert module.many(3) == 3
