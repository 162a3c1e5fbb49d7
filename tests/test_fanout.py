"""Fanning a stage out: Stage.map on every executor, lakelet.run with arguments, containers of
files as parameters, cache=False once per call, and a power cut on derived data."""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest

import lakelet

from .conftest import stage_module

FANOUT = """
import os, threading, lakelet

BOTH_IN = threading.Barrier(2, timeout=60)


def _mark(tag):
    # one file per execution of a stage body: the test counts them
    folder = os.environ["FANOUT_MARKS"]
    with open(os.path.join(folder, f"{tag}-{os.getpid()}-{os.urandom(4).hex()}"), "w"):
        pass


@lakelet.stage
def square(x):
    _mark(f"square{x}")
    if str(x) in os.environ.get("FANOUT_FAIL", "").split(","):
        raise ValueError(f"item {x} broke")
    return {"x": x, "square": x * x}


@lakelet.stage
def add(a, b):
    return a + b


@lakelet.stage(cache=False)
def stamp(label):
    _mark("stamp")
    return {"label": label, "token": os.urandom(4).hex()}


@lakelet.stage
def sizes(files):
    return [f.size for f in files]


@lakelet.stage
def read_in(tag):
    BOTH_IN.wait()  # two maps' items at once, each in its own lake
    return lakelet.File("in").read_text()


@lakelet.stage
def blob(i):
    return bytes([i]) * 200_000


COIN_BOTH = threading.Barrier(2, timeout=60)


@lakelet.stage
def coin(x):
    COIN_BOTH.wait()  # two maps run the same new item at once: one binds first
    return os.urandom(8).hex()


@lakelet.stage
def noted(x):
    # writes a file, then returns a value no format takes when x is 2: found only when its run
    # is prepared for the group commit, after the function returned
    with lakelet.File(f"notes/{x}.txt").open("w") as o:
        o.write(f"note {x}")
    return {x, -x} if x == 2 else x
"""


@pytest.fixture
def fanout(tmp_path, monkeypatch):
    """The stages above as a fresh module that worker processes import too, a lake, and a count
    of the bodies that ran."""
    module, marks = stage_module(tmp_path, monkeypatch, FANOUT, "FANOUT_MARKS")
    lake = lakelet.init(tmp_path / "lake")
    lakelet.use(lake)

    def ran(prefix: str = "square") -> list[str]:
        found = sorted(p.name.split("-")[0] for p in marks.iterdir() if p.name.startswith(prefix))
        for p in marks.iterdir():
            p.unlink()
        return found

    return module, lake, ran


def _executor(kind: str, request, module) -> object:
    if kind != "dask":
        return None if kind == "none" else kind
    client = request.getfixturevalue("dask_client")
    client.run(sys.path.insert, 0, str(Path(module.__file__).parent))
    client.run(os.environ.update, {"FANOUT_MARKS": os.environ["FANOUT_MARKS"]})
    return client


@pytest.mark.parametrize("kind", ["none", "processes", "dask"])
def test_map_runs_each_new_item_once_and_keys_it_like_a_call(fanout, kind, request, caplog) -> None:
    module, lake, ran = fanout
    executor = _executor(kind, request, module)
    caplog.set_level(logging.INFO, logger="lakelet.stage")
    items = [1, 2, 3, 2]  # a repeated item is one run
    assert module.square.map(items, executor=executor, max_workers=2) == [
        {"x": x, "square": x * x} for x in items
    ]
    assert ran() == ["square1", "square2", "square3"]
    summaries = [r.getMessage() for r in caplog.records if "items:" in r.getMessage()]
    assert summaries == [f"{module.__name__}.square: 4 items: 3 ran, 1 cached, 0 failed"]

    assert module.square.map(items, executor=executor, max_workers=2)[2] == {"x": 3, "square": 9}
    assert module.square(2) == {"x": 2, "square": 4}  # a direct call of a mapped item: a hit
    assert ran() == []
    module.square.map([1, 2, 3, 4], executor=executor, max_workers=2)
    assert ran() == ["square4"]
    assert module.add.map([1, 2], [10, 20, 30], executor=executor) == [11, 22]  # zipped, as map()


@pytest.mark.parametrize("kind", ["none", "processes"])
def test_failed_items_do_not_stop_the_others_and_run_again_alone(fanout, kind, monkeypatch) -> None:
    module, lake, ran = fanout
    monkeypatch.setenv("FANOUT_FAIL", "2,4")
    with pytest.raises(lakelet.RunError, match=r"2 of 5 items .*item 2 broke") as info:
        module.square.map(range(5), executor=None if kind == "none" else kind, max_workers=2)
    assert sorted(info.value.failures) == [f"{module.__name__}.square[{i}]" for i in (2, 4)]
    assert "ValueError: item 4 broke" in info.value.failures[f"{module.__name__}.square[4]"]
    assert ran() == ["square0", "square1", "square2", "square3", "square4"]
    monkeypatch.setenv("FANOUT_FAIL", "")
    assert [r["square"] for r in module.square.map(range(5))] == [0, 1, 4, 9, 16]
    assert ran() == ["square2", "square4"]


@pytest.mark.parametrize("kind", ["none", "processes"])
def test_an_item_whose_value_cannot_be_stored_fails_alone_and_leaves_nothing(fanout, kind) -> None:
    module, lake, _ = fanout
    executor = None if kind == "none" else kind
    with pytest.raises(lakelet.RunError, match=r"1 of 4 items .*returned a set") as info:
        module.noted.map(range(4), executor=executor, max_workers=2)
    assert list(info.value.failures) == [f"{module.__name__}.noted[2]"]
    # a worker's stage writes into the map's lake, whatever lake the worker finds by itself
    assert [f.read_text() for f in lake.ls("notes/")] == ["note 0", "note 1", "note 3"]
    assert list((lake.root / "tmp").iterdir()) == []  # nor left behind
    assert module.noted.map([0, 1, 3], executor=executor) == [0, 1, 3]  # bound: all cached
    assert len(lake.ls("notes/")) == 3


def test_two_threads_mapping_over_two_lakes_each_see_their_own(fanout, tmp_path) -> None:
    """Each thread maps over its own lake (``with lakelet.use(lake)``) on one shared thread pool;
    the items of both run at once (a barrier holds each until the other has started), and each
    reads "in" from the lake its map runs over. With one current lake per process, both read
    the lake made current last."""
    import concurrent.futures as cf
    import threading

    module, _, _ = fanout
    lakes = {}
    for tag in ("A", "B"):
        lakes[tag] = lakelet.init(tmp_path / tag)
        lakes[tag].add(tag.encode(), "in")
    out: dict[str, object] = {}

    def go(tag: str) -> None:
        try:
            with lakelet.use(lakes[tag]):
                out[tag] = module.read_in.map([tag], executor=pool)
        except Exception as e:  # reported below, in the test's thread
            out[tag] = e

    with cf.ThreadPoolExecutor(2) as pool:
        threads = [threading.Thread(target=go, args=(tag,)) for tag in lakes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert out == {"A": ["A"], "B": ["B"]}


@pytest.mark.parametrize("kind", ["none", "processes"])
def test_a_long_map_goes_a_window_at_a_time_with_one_run_per_key(fanout, kind, monkeypatch) -> None:
    # windows of 4 items here (1,024 in use): a key met again in a later window is found cached
    # there, a failure is named by its place in the whole map, and the results keep their order
    from lakelet.runner import _map

    module, _, ran = fanout
    monkeypatch.setattr(_map, "_WINDOW", 4)
    executor = None if kind == "none" else kind
    items = [1, 2, 3, 4, 5, 2, 7, 1, 9, 9]
    monkeypatch.setenv("FANOUT_FAIL", "7")
    with pytest.raises(lakelet.RunError, match=r"1 of 10 items .*item 7 broke") as info:
        module.square.map(items, executor=executor, max_workers=2)
    assert list(info.value.failures) == [f"{module.__name__}.square[6]"]
    assert ran() == sorted(f"square{x}" for x in {1, 2, 3, 4, 5, 7, 9})
    monkeypatch.setenv("FANOUT_FAIL", "")
    assert [r["square"] for r in module.square.map(items, executor=executor)] == [x * x for x in items]
    assert ran() == ["square7"]


def test_what_a_map_holds_while_it_runs_does_not_grow_with_its_items(fanout, monkeypatch) -> None:
    """Beyond its results, a map holds a window of items at a time, and one longer than a window
    remembers none of its runs for later calls: the peak of a map of 1,200 new items is not
    much above that of 400. (Windows of 64 here, 1,024 in use.)"""
    from lakelet.runner import _map

    module, _, _ = fanout
    monkeypatch.setattr(_map, "_WINDOW", 64)
    module.add.map(range(5), range(5))  # the fixed costs: imports, statements, git state

    def peak(start: int, n: int) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            module.add.map(range(start, start + n), range(n))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small = peak(10, 400)
    # the smaller of two: one may happen to grow the interpreter's table of interned strings
    # (megabytes at once), which no map keeps
    large = min(peak(1_000, 1_200), peak(10_000, 1_200))
    per_item = (large - small) / 800
    # results, arguments: ~300 bytes an item; each item's key, record name and outcome held to
    # the end, and every run remembered, were ~3 KB
    assert per_item < 1_000, f"{per_item:.0f} bytes per item"


@pytest.mark.parametrize("how", ["two maps", "two machines"])
def test_two_racing_runs_of_one_new_item_both_return_the_value_the_lake_keeps(fanout, tmp_path, how) -> None:
    # A non-deterministic stage run twice at once, by two maps (they take no key lock) or by
    # calls on two machines sharing a remote: the run bound second adopts the first's outputs,
    # and must return them, not the value its own body returned, which the lake does not hold.
    module, lake, _ = fanout
    if how == "two machines":
        remote = (tmp_path / "remote").as_uri()
        lakes = [lakelet.init(tmp_path / f"machine{t}", remote=remote) for t in range(2)]
    else:
        lakes = [lake, lake]
    out: dict[int, object] = {}

    def go(t: int) -> None:
        with lakelet.use(lakes[t]):
            out[t] = module.coin.map([7])[0] if how == "two maps" else module.coin(7)

    threads = [threading.Thread(target=go, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = [module.coin._outcome(lk, module.coin._key(lk, (7,), {}), (7,), {}, False) for lk in lakes]
    assert all(not k.ran for k in kept)  # both lakes hold one run of the item
    assert out == {0: kept[0].value, 1: kept[1].value} and kept[0].value == kept[1].value


def test_large_values_are_not_remembered(fanout) -> None:
    # a process remembers small values only: 30 calls of 200 KB values, run then cached, keep
    # next to nothing (they kept 6 MB, up to 16,384 of them: a review found a loop at 513 MB)
    module, _, _ = fanout
    module.blob(255)  # the fixed costs
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2):
            assert [len(module.blob(i)) for i in range(30)] == [200_000] * 30
        gc.collect()
        per_call = (tracemalloc.get_traced_memory()[0] - before) / 30
    finally:
        tracemalloc.stop()
    assert per_call < 20_000, f"{per_call:.0f} bytes kept per call"


def test_map_reports_progress_by_item(fanout) -> None:
    module, _, _ = fanout

    class Count:
        total = done = 0

        def add_total(self, n: int) -> None:
            self.total += n

        def advance(self, n: int) -> None:
            self.done += n

    count = Count()
    module.square.map([1, 2, 2, 3], progress=count)
    assert (count.total, count.done) == (4, 4)


@pytest.mark.parametrize("executor", [None, "processes"])
def test_run_takes_a_stage_with_arguments(fanout, executor) -> None:
    module, lake, ran = fanout
    result = lakelet.run(functools.partial(module.square, 7), executor=executor, max_workers=1)
    assert result == {"x": 7, "square": 49}
    assert ran() == ["square7"]
    assert module.square(7) == result and ran() == []  # keyed like the direct call
    with pytest.raises(lakelet.InvalidArgumentError, match="twice"):
        lakelet.run(functools.partial(module.square, 1), functools.partial(module.square, 2))


@pytest.mark.parametrize("executor", [None, "processes"])
def test_cache_false_runs_exactly_once_per_call_and_keeps_each_run(fanout, executor) -> None:
    module, lake, ran = fanout
    first = lakelet.run(functools.partial(module.stamp, "a"), executor=executor, max_workers=1)
    assert ran("stamp") == ["stamp"]
    second = module.stamp("a")
    assert ran("stamp") == ["stamp"] and second["token"] != first["token"]
    records = [f.name for f in lake.ls(f"stages/{module.__name__}.stamp/") if f.name.count("/") == 2]
    assert len(records) == 2  # each call its own generation: g1, g2
    assert len(module.stamp.map(["a", "a"])) == 2 and ran("stamp") == ["stamp", "stamp"]


def test_lists_and_dicts_of_files_are_parameters_keyed_by_content(fanout, make_file) -> None:
    module, lake, _ = fanout
    a = lake.add(make_file("a.txt", "aaa"), "in/a.txt")
    b = lake.add(make_file("b.txt", "bb"), "in/b.txt")
    c = lake.add(make_file("c.txt", "bbbb"), "in/c.txt")
    assert module.sizes([a, b]) == [3, 2]
    key_ab, parts = module.sizes.key(lake, ([a, b],))
    assert parts["inputs"]["files[1]"] == {"name": "in/b.txt", "digest": b.digest}
    assert module.sizes.key(lake, ([a, c],))[0] != key_ab
    assert module.sizes.key(lake, ((a, b),))[0] == key_ab  # a tuple is keyed as a list
    assert module.sizes([a, c]) == [3, 4]
    with pytest.raises(lakelet.InvalidArgumentError, match="JSON-able"):
        module.sizes([object()])


def _segments(lake: lakelet.Lake) -> list[Path]:
    return sorted((lake.root / "names" / "segments").glob("*"))


def test_a_lone_call_binds_its_outputs_and_run_record_in_one_segment(fanout) -> None:
    module, lake, _ = fanout
    before = _segments(lake)
    module.square(4)
    (written,) = [p for p in _segments(lake) if p not in before]
    names = {json.loads(line)["name"] for line in written.read_text().splitlines()}
    record = f"stages/{module.__name__}.square/{module.square.key(lake, (4,))[0][:40]}.json"
    assert record in names and any("/output." in n for n in names), names


def test_a_power_cut_that_drops_unsynced_segments_reruns_the_stage(fanout) -> None:
    """Stage outputs are bound without fsync: a power cut may lose their segments. Simulated:
    the run's segments lose their lines (as unsynced data does), the index is rebuilt."""
    module, lake, ran = fanout
    before = _segments(lake)
    assert module.square(5)["square"] == 25 and ran() == ["square5"]
    written = [p for p in _segments(lake) if p not in before]
    assert len(written) == 1  # its outputs and its run record
    for path in written:
        path.chmod(0o644)
        path.write_bytes(b"")
    assert lake.fsck().ok
    again = lakelet.open(lake.root)
    with lakelet.use(again):
        assert module.square(5)["square"] == 25
    assert ran() == ["square5"]
    assert again.fsck().ok


def test_a_power_cut_that_tears_an_unsynced_output_reruns_the_stage(fanout) -> None:
    module, lake, ran = fanout
    module.square(6)
    ran()
    (output,) = [f for f in lake.ls(f"stages/{module.__name__}.square/") if "/output." in f.name]
    blob = lake.context.blob_path(output.record)
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:3])  # the tail never reached the disk
    assert module.square(6)["square"] == 36
    assert ran() == ["square6"]
    assert lake.fsck().ok  # the run wrote the object whole again


def test_what_a_map_leaves_remembered_is_small_per_item(fanout) -> None:
    """A process remembers parsed run records for cached calls, but not their lineage (source,
    environment, packages: most of a record): what stays after a map grows by little per item."""
    module, _, _ = fanout
    module.add.map(range(5), range(5))  # the fixed costs: imports, statements, git state
    gc.collect()
    tracemalloc.start()
    try:
        # The smaller growth of two maps: one may happen to grow a table of the interpreter's
        # own (the interned strings pathlib adds to: 3.7 MB at once, after enough other tests in
        # this process), which is no memory a map keeps, and the next such growth is twice as
        # far off.
        growths = []
        for start in (5, 405):
            before = tracemalloc.get_traced_memory()[0]
            module.add.map(range(start, start + 400), range(400))
            gc.collect()
            growths.append((tracemalloc.get_traced_memory()[0] - before) / 400)
        per_item = min(growths)
    finally:
        tracemalloc.stop()
    assert per_item < 4096, f"{per_item:.0f} bytes per item"
