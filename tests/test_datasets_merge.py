"""Upserts: write_dataset(..., mode="merge", keys=[...]) as one Delta commit."""

from __future__ import annotations

import os
import subprocess
import sys

import deltalake
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import lakelet

from .conftest import snapshot


def _rows(ds) -> list[tuple]:
    table = ds.to_arrow()
    return sorted(zip(*[table.column(c).to_pylist() for c in ("id", "name")], strict=True))


def test_merge_replaces_matching_keys_and_appends_the_rest_in_one_commit(lake) -> None:
    lake.write_dataset(
        "customers",
        pa.table({"region": ["eu", "eu", "us"], "id": [1, 2, 3], "name": ["a", "b", "c"]}),
        partition_by=["region"],
    )
    lake.write_dataset("customers", pa.table({"region": ["us"], "id": [4], "name": ["d"]}))
    before = lake.dataset("customers")
    ds = lake.write_dataset(
        "customers",
        pa.table({"region": ["eu", "us"], "id": [2, 5], "name": ["B", "e"]}),
        mode="merge",
        keys=["id"],
    )
    assert ds.version == 3 and ds.num_rows == 5
    assert _rows(ds) == [(1, "a"), (2, "B"), (3, "c"), (4, "d"), (5, "e")]
    log = ds.folder / "_delta_log" / "00000000000000000002.json"
    actions = [next(iter(line)) for line in map(__import__("json").loads, log.read_text().splitlines())]
    assert actions.count("remove") == 1  # only the eu file held key 2; the us files stay
    assert ds.stats()["id"]["count"] == 5 and ds.stats()["id"]["nulls"] == 0
    table = deltalake.DeltaTable(str(ds.folder))
    assert sorted(table.to_pyarrow_table().column("name").to_pylist()) == ["B", "a", "c", "d", "e"]
    assert sorted(pl.read_delta(str(ds.folder), version=1)["name"].to_list()) == ["a", "b", "c", "d"]
    assert _rows(before) == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]  # the older version stays


def test_merge_on_two_keys_into_an_empty_lake(lake) -> None:
    first = pa.table({"day": ["d1", "d1"], "id": [1, 2], "name": ["a", "b"]})
    lake.write_dataset("t", first, mode="merge", keys=["day", "id"])
    ds = lake.write_dataset(
        "t",
        pa.table({"day": ["d1", "d2"], "id": [1, 1], "name": ["A", "x"]}),
        mode="merge",
        keys=["day", "id"],
    )
    assert sorted(ds.to_arrow().to_pylist(), key=str) == sorted(
        [
            {"day": "d1", "id": 1, "name": "A"},
            {"day": "d1", "id": 2, "name": "b"},
            {"day": "d2", "id": 1, "name": "x"},
        ],
        key=str,
    )


@pytest.mark.parametrize(
    ("keys", "data", "message"),
    [
        (None, {"id": [1], "name": ["x"]}, r'mode="merge" needs keys=\[...\]'),
        ([], {"id": [1], "name": ["x"]}, r'mode="merge" needs keys=\[...\]'),
        (["nope"], {"id": [1], "name": ["x"]}, "merge key 'nope' is not a column"),
        (["id"], {"id": [1, 1], "name": ["x", "y"]}, "1 rows of the new data repeat a key"),
        (["name"], {"id": [9]}, "merge key 'name' is not a column"),
    ],
)
def test_a_bad_merge_is_one_line_and_writes_nothing(lake, keys, data, message) -> None:
    lake.write_dataset("customers", pa.table({"id": [1, 2], "name": ["a", "b"]}))
    before = snapshot(lake.root / "datasets")
    with pytest.raises(lakelet.InvalidArgumentError, match=message) as raised:
        lake.write_dataset("customers", pa.table(data), mode="merge", keys=keys)
    assert "\n" not in str(raised.value)
    assert snapshot(lake.root / "datasets") == before
    with pytest.raises(lakelet.InvalidArgumentError, match='go with mode="merge" only'):
        lake.write_dataset("customers", pa.table(data), keys=["id"])


MERGE = """
import sys, lakelet, pyarrow as pa
lake = lakelet.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for i in range(4):
    lake.write_dataset("counters", pa.table({"id": [0, 100 + i + 10 * int(sys.argv[2])],
                       "writer": [sys.argv[2]] * 2}), mode="merge", keys=["id"])
print("done", flush=True)
"""


def test_concurrent_merges_on_one_key_lose_no_row(tmp_path) -> None:
    remote = (tmp_path / "remote").as_uri()
    roots = [lakelet.init(tmp_path / m, remote=remote).root for m in ("a", "b")]
    lakelet.open(roots[0]).write_dataset("counters", pa.table({"id": [0], "writer": ["start"]}))
    script = tmp_path / "merge.py"
    script.write_text(MERGE)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), w],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for r, w in zip(roots, "12", strict=True)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0 and out.strip() == "done"
    ds = lakelet.init(tmp_path / "c", remote=remote).dataset("counters")
    ids = sorted(ds.to_arrow().column("id").to_pylist())
    assert ds.version == 9 and ids == [0, *range(110, 114), *range(120, 124)]  # key 0 once, nothing lost
    table = deltalake.DeltaTable(str(tmp_path / "remote" / "datasets" / "counters")).to_pyarrow_table()
    assert sorted(table.column("id").to_pylist()) == ids


PEAK = """
import sys, lakelet, numpy as np, pyarrow as pa
lake = lakelet.open(sys.argv[1])
ids = np.arange(0, int(sys.argv[2]), 997)  # a key in every file
lake.write_dataset("m", pa.table({"id": ids, "value": -1.0 * ids}), mode="merge", keys=["id"])
print(pa.default_memory_pool().max_memory())
"""


def test_a_merge_holds_one_rewritten_file_in_memory_not_all_it_rewrites(tmp_path) -> None:
    # The same merge into 3 and into 12 files of 100,000 rows, each touched: Arrow's peak
    # allocation (a fresh process each) must not grow with the number of files rewritten.
    script = tmp_path / "peak.py"
    script.write_text(PEAK)
    peaks = {}
    for files in (3, 12):
        lake = lakelet.init(tmp_path / str(files))
        for i in range(files):
            ids = np.arange(i * 100_000, (i + 1) * 100_000)
            lake.write_dataset("m", pa.table({"id": ids, "value": 0.5 * ids}))
        run = subprocess.run(
            [sys.executable, str(script), str(lake.root), str(files * 100_000)],
            capture_output=True,
            text=True,
            env={**os.environ},
            timeout=180,
        )
        assert run.returncode == 0, run.stderr
        peaks[files] = int(run.stdout.split()[-1])
        merged = lake.dataset("m")
        table = deltalake.DeltaTable(str(merged.folder)).to_pyarrow_table().sort_by("id")
        ids = np.arange(files * 100_000)
        expected = np.where(ids % 997 == 0, -1.0 * ids, 0.5 * ids)
        assert merged.num_rows == len(ids) and table.column("id").to_pylist() == ids.tolist()
        assert table.column("value").to_pylist() == expected.tolist()
    assert peaks[12] < 1.5 * peaks[3], peaks  # before: every rewritten file whole, ~3x
