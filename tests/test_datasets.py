"""Datasets: versioned, partitioned Parquet in a Hive layout that other engines read directly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import blake3
import deltalake
import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest

import lakelet


def _orders(day: str, ids: list[int]) -> pa.Table:
    return pa.table(
        {
            "dt": [day] * len(ids),
            "id": ids,
            "amount": [i * 1.5 for i in ids],
            "customer": [f"c{i % 3}" for i in ids],
        }
    )


def test_write_versions_and_read_back(lake) -> None:
    v1 = lake.write_dataset("sales/orders", _orders("2025-01-20", [1, 2]), partition_by=["dt"])
    v2 = lake.write_dataset("sales/orders", _orders("2025-01-21", [3]), partition_by=["dt"])
    assert (v1.version, v2.version, v2.num_rows) == (1, 2, 3)
    ds = lake.dataset("sales/orders")
    assert ds.version == 2 and ds.versions() == [1, 2]
    assert sorted(ds.to_arrow().column("id").to_pylist()) == [1, 2, 3]
    assert lake.dataset("sales/orders", version=1).num_rows == 2
    assert ds.schema.names == ["dt", "id", "amount", "customer"]
    assert ds.files == [str(ds.folder / f["relative"]) for f in ds.file_details]
    for f in ds.file_details:  # Hive layout, files named by their content digest
        assert f["relative"].startswith("dt=2025-01-2") and f["relative"].split("/")[-1].startswith("part-")
        assert f["digest"].startswith("blake3:") and f["digest"][7:39] in f["relative"]
        content = (ds.folder / f["relative"]).read_bytes()
        assert f["digest"] == f"blake3:{blake3.blake3(content).hexdigest()}" and f["size"] == len(content)
    with pytest.raises(lakelet.NotFoundError):
        lake.dataset("sales/orders", version=3)
    with pytest.raises(lakelet.NotFoundError):
        lake.dataset("nope")


def test_overwrite_starts_a_new_file_list(lake) -> None:
    lake.write_dataset("d", _orders("2025-01-20", [1, 2]))
    ds = lake.write_dataset("d", _orders("2025-01-21", [7]), mode="overwrite")
    assert ds.to_arrow().column("id").to_pylist() == [7]
    assert lake.dataset("d", version=1).to_arrow().column("id").to_pylist() == [1, 2]


def test_every_kind_of_input(lake) -> None:
    frame = pd.DataFrame({"k": ["a", "b"], "v": [1, 2]})
    lake.write_dataset("kinds", frame)
    lake.write_dataset("kinds", pl.DataFrame({"k": ["c"], "v": [3]}))
    batches = (pa.record_batch({"k": [f"r{i}"], "v": [i]}) for i in range(5))
    reader = pa.RecordBatchReader.from_batches(pa.schema({"k": pa.string(), "v": pa.int64()}), batches)
    ds = lake.write_dataset("kinds", reader)
    assert ds.num_rows == 8 and sorted(ds.to_pandas()["v"].tolist()) == [0, 1, 1, 2, 2, 3, 3, 4]
    with pytest.raises(lakelet.InvalidArgumentError, match="DataFrame"):
        lake.write_dataset("kinds", {"k": [1]})


def test_schema_rules(lake) -> None:
    lake.write_dataset("s", pa.table({"id": [1], "x": [1.0]}))
    ds = lake.write_dataset("s", pa.table({"id": [2], "x": [2.0], "extra": ["new"]}))
    assert ds.schema.names == ["id", "x", "extra"]
    assert (ds.stats()["extra"]["count"], ds.stats()["extra"]["nulls"]) == (1, 1)
    assert ds.to_arrow().sort_by("id").column("extra").to_pylist() == [None, "new"]
    before = sorted(p.relative_to(lake.root) for p in (lake.root / "datasets").rglob("*"))
    with pytest.raises(lakelet.InvalidArgumentError, match=r"column 'x' is double .* but string"):
        lake.write_dataset("s", pa.table({"id": [3], "x": ["oops"]}))
    assert sorted(p.relative_to(lake.root) for p in (lake.root / "datasets").rglob("*")) == before
    assert lake.dataset("s").version == 2


def test_filters_prune_partitions_and_other_engines_read_the_folder(lake) -> None:
    for day, ids in [("2025-01-20", [1, 2]), ("2025-01-21", [3]), ("2025-01-22", [4, 5, 6])]:
        lake.write_dataset("orders", _orders(day, ids), partition_by=["dt"])
    ds = lake.dataset("orders")
    one_day = ds.to_arrow(filter=pads.field("dt") == "2025-01-22")
    assert sorted(one_day.column("id").to_pylist()) == [4, 5, 6]
    assert ds.to_arrow(columns=["id"], filter=pads.field("amount") > 5).column("id").to_pylist() == [4, 5, 6]

    folder = str(ds.folder)
    assert pads.dataset(folder, partitioning="hive").count_rows() == 6
    assert pl.scan_parquet(f"{folder}/**/*.parquet", hive_partitioning=True).collect().height == 6
    total = duckdb.sql(
        f"SELECT dt, sum(amount) FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = true) "
        "GROUP BY dt ORDER BY dt"
    ).fetchall()
    assert [(str(day), amount) for day, amount in total] == [
        ("2025-01-20", 4.5),
        ("2025-01-21", 4.5),
        ("2025-01-22", 22.5),
    ]  # DuckDB reads dt as a date


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(zip(*table.select(["dt", "id"]).to_pydict().values(), strict=True))


def test_delta_readers_see_exactly_each_version(lake) -> None:
    """append, append, overwrite: every Delta reader sees the 3 rows of the overwrite, not the 6
    files in the folder, and each older version by Delta's number (lakelet's minus one)."""
    lake.write_dataset("orders", _orders("2025-01-20", [1, 2]), partition_by=["dt"])
    lake.write_dataset("orders", _orders("2025-01-21", [3]), partition_by=["dt"])
    ds = lake.write_dataset("orders", _orders("2025-01-22", [7, 8, 9]), partition_by=["dt"], mode="overwrite")
    folder = str(ds.folder)
    latest = [("2025-01-22", 7), ("2025-01-22", 8), ("2025-01-22", 9)]
    table = deltalake.DeltaTable(folder)
    assert table.version() == ds.version - 1 == 2 and _rows(table.to_pyarrow_table()) == latest
    assert table.metadata().partition_columns == ["dt"]
    assert _rows(pl.read_delta(folder).to_arrow()) == latest
    arrow_ds = deltalake.DeltaTable(folder).to_pyarrow_dataset()
    con = duckdb.connect()
    con.register("orders", arrow_ds)
    assert con.sql("SELECT count(*), sum(id) FROM orders").fetchall() == [(3, 24)]
    assert sorted(deltalake.DeltaTable(folder).to_pandas()["id"]) == [7, 8, 9]
    assert _rows(ds.to_arrow()) == latest and sorted(ds.to_pandas()["id"]) == [7, 8, 9]
    for version, ids in ((1, [1, 2]), (2, [1, 2, 3])):
        old = deltalake.DeltaTable(folder, version=version - 1).to_pyarrow_table()
        assert sorted(old.column("id").to_pylist()) == ids
        assert sorted(pl.read_delta(folder, version=version - 1)["id"].to_list()) == ids
        assert sorted(lake.dataset("orders", version=version).to_arrow().column("id").to_pylist()) == ids
    assert len(ds.files) == 1 and all(p.startswith(folder) and p.endswith(".parquet") for p in ds.files)
    assert pads.dataset(ds.files).count_rows() == 3  # the paths of this version's files only


def test_statistics(lake) -> None:
    lake.write_dataset("st", pa.table({"x": [1.0, 2.0, None, 4.0], "s": ["a", "b", "c", None]}))
    ds = lake.write_dataset("st", pa.table({"x": [10.0], "s": ["z"]}))
    stats = ds.stats()
    x = stats["x"]
    assert (x["count"], x["nulls"], x["min"], x["max"]) == (4, 1, 1.0, 10.0)
    assert stats["x"]["quantiles"]["0.5"] == 4.0 and sum(stats["x"]["histogram"]["counts"]) == 4
    assert (stats["s"]["min"], stats["s"]["max"], stats["s"]["nulls"]) == ("a", "z", 1)


def test_quantiles_of_a_large_write_come_from_a_uniform_sample(lake) -> None:
    n = 300_000  # streamed in six batches: the reservoir keeps 4,096 of them
    batches = (pa.record_batch({"v": pa.array(range(i, i + 50_000))}) for i in range(0, n, 50_000))
    reader = pa.RecordBatchReader.from_batches(pa.schema({"v": pa.int64()}), batches)
    stats = lake.write_dataset("big", reader).stats()["v"]
    assert (stats["count"], stats["min"], stats["max"], stats["exact"]) == (n, 0, n - 1, False)
    for q, value in stats["quantiles"].items():  # rank error ~1/sqrt(4096) = 1.6 % of the rows
        assert abs(value - float(q) * n) < 0.05 * n, (q, value)
    assert all(abs(c - n / 10) < 0.25 * n / 10 for c in stats["histogram"]["counts"]), stats["histogram"]


def _iso(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


def test_min_max_from_parquet_metadata_and_folders_are_the_data_s(lake) -> None:
    # min/max come from the writer's Parquet statistics and, for partition columns, from the
    # folder names: each case where those could differ from the data, checked against it.
    paris = pa.timestamp("us", tz="Europe/Paris")
    table = pa.table(
        {
            "part": ["a/b c%", "", None, "é", "a/b c%"],  # escaped in the path, empty, null
            "year": [2024, -1, 2024, None, 2023],  # an int partition compares as an int
            "long": ["x" * 5000, "y" * 5000, None, "a", "b"],  # > 4 KiB: Parquet keeps no min/max
            "none": pa.array([None] * 5, pa.string()),
            "when": pa.array([1_700_000_000_123_456, 5, None, 7, 8], paris),  # written as UTC
            "ns": pa.array([1, 1_700_000_000_123_456_789, None, 2, 3], pa.timestamp("ns")),
            "u64": pa.array([1, 2**63 - 1, 3, None, 2], pa.uint64()),  # past 2**63: refused
            "zero": [0.0, 0.0, None, 0.0, 0.0],  # Parquet records the min of zeros as -0.0
            "nan": [float("nan"), 2.0, None, -1.5, float("nan")],  # Parquet skips NaN
        }
    )
    stats = lake.write_dataset("edge", table, partition_by=["part", "year"]).stats()
    for name in table.column_names:
        column = table[name]
        mm = pc.min_max(column)  # also skips NaN (all NaN: it gives NaN, lakelet None)
        lo, hi = (_iso(mm["min"].as_py()), _iso(mm["max"].as_py()))
        assert (stats[name]["min"], stats[name]["max"]) == (lo, hi), name
        assert (stats[name]["count"], stats[name]["nulls"]) == (5 - column.null_count, column.null_count)
    assert (stats["part"]["min"], stats["part"]["max"]) == ("", "é")
    assert (stats["year"]["min"], stats["year"]["max"]) == (-1, 2024)
    assert stats["long"]["max"] == "y" * 5000 and stats["none"]["min"] is None
    assert stats["when"]["max"] == "2023-11-14T23:13:20.123456+01:00"  # in the column's zone
    assert stats["ns"]["max"] == "2023-11-14T22:13:20.123456789"
    assert stats["u64"]["max"] == 2**63 - 1
    assert stats["zero"]["min"] == 0.0 and math.copysign(1.0, stats["zero"]["min"]) == 1.0
    assert stats["nan"]["quantiles"]["0.5"] == 2.0 and stats["nan"]["histogram"]["counts"][0] == 1


def test_a_second_machine_fetches_only_the_partitions_it_reads(tmp_path) -> None:
    remote = (tmp_path / "remote").as_uri()
    a = lakelet.init(tmp_path / "a", remote=remote)
    b = lakelet.init(tmp_path / "b", remote=remote)
    for day in ("2025-01-20", "2025-01-21", "2025-01-22"):
        a.write_dataset("orders", _orders(day, [1, 2]), partition_by=["dt"])
    ds = b.dataset("orders")
    assert ds.version == 3 and b.datasets() == ["orders"]
    assert ds.to_arrow(filter=pads.field("dt") == "2025-01-21").num_rows == 2
    local = [p for p in (b.root / "datasets").rglob("*.parquet")]
    assert len(local) == 1 and "dt=2025-01-21" in str(local[0])


APPEND = """
import sys, lakelet, pyarrow as pa
lake = lakelet.open(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
for i in range(5):
    lake.write_dataset("shared", pa.table({"writer": [sys.argv[2]], "i": [i]}))
print("done", flush=True)
"""


def test_concurrent_appends_from_two_machines_all_survive(tmp_path) -> None:
    remote = (tmp_path / "remote").as_uri()
    roots = [lakelet.init(tmp_path / m, remote=remote).root for m in ("a", "b")]
    script = tmp_path / "append.py"
    script.write_text(APPEND)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(r), w], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for r, w in zip(roots, "ab", strict=True)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "done"
    c = lakelet.init(tmp_path / "c", remote=remote)
    ds = c.dataset("shared")
    assert ds.version == 10 and ds.num_rows == 10
    rows = sorted(zip(*ds.to_arrow().to_pydict().values(), strict=True))
    assert rows == sorted([(w, i) for w in "ab" for i in range(5)])
    log = tmp_path / "remote" / "datasets" / "shared" / "_delta_log"
    commits = sorted(log.glob("*.json"))
    assert [int(c.name[:20]) for c in commits] == list(range(10))
    table = deltalake.DeltaTable(str(tmp_path / "remote" / "datasets" / "shared"))
    assert table.version() == 9 and sorted(table.to_pyarrow_table().to_pydict()["i"]) == sorted(
        list(range(5)) * 2
    )


def test_cli_datasets_and_info(lake) -> None:
    from .conftest import run_lakelet

    lake.write_dataset("sales/orders", _orders("2025-01-20", [1, 2, 3]), partition_by=["dt"])
    env = {"LAKELET_HOME": str(lake.root)}
    listing = json.loads(run_lakelet("datasets", "--json", env=env).stdout)
    assert [(d["name"], d["version"], d["rows"]) for d in listing] == [("sales/orders", 1, 3)]
    info = run_lakelet("info", "datasets/sales/orders", env=env)
    assert info.returncode == 0 and b"amount" in info.stdout and b"version 1 of 1" in info.stdout
    data = json.loads(run_lakelet("info", "datasets/sales/orders", "--json", env=env).stdout)
    assert data["stats"]["amount"]["max"] == 4.5
    missing = run_lakelet("info", "datasets/nope", env=env)
    assert missing.returncode == 1 and missing.stderr.decode().startswith("error: no dataset")


def test_state_bookmarks_and_run_logs_are_shared(tmp_path) -> None:
    from lakelet.datasets._state import run_logs, write_run_log

    remote = (tmp_path / "remote").as_uri()
    a = lakelet.init(tmp_path / "a", remote=remote)
    b = lakelet.init(tmp_path / "b", remote=remote)
    assert a.state("orders-pipeline").get() == {}
    a.state("orders-pipeline").set({"orders": {"replication_key_value": "2025-01-20"}})
    assert b.state("orders-pipeline").get() == {"orders": {"replication_key_value": "2025-01-20"}}
    assert (tmp_path / "remote" / "state" / "orders-pipeline" / "state.json").is_file()  # DataSpoc layout
    write_run_log(a.context, "orders-pipeline", {"rows": {"orders": 2}})
    write_run_log(b.context, "orders-pipeline", {"rows": {"orders": 1}})
    assert [log["rows"]["orders"] for log in run_logs(a.context, "orders-pipeline")] == [2, 1]
    with pytest.raises(lakelet.InvalidArgumentError):
        a.state("orders-pipeline").set({"when": object()})
    with pytest.raises(lakelet.InvalidNameError):
        a.state("../escape")


def test_a_dataset_written_inside_a_stage_is_in_its_lineage(lake) -> None:
    lakelet.use(lake)

    @lakelet.stage
    def load_orders(day: str):
        ds = lake.write_dataset("orders", _orders(day, [1, 2]), partition_by=["dt"])
        return {"rows": ds.num_rows}

    assert load_orders("2025-01-20") == {"rows": 2}
    output = next(f for f in lake.ls("stages/") if "/output." in f.name)
    assert output.lineage()["datasets_written"] == [{"dataset": "orders", "version": 1, "rows": 2}]


def test_a_dataset_name_longer_than_a_file_name_is_refused_in_one_line(lake) -> None:
    import pyarrow as pa

    long_name = "sales/" + "a" * 300  # a valid lake name, but a dataset's name is a folder path
    write = lambda: lake.write_dataset(long_name, pa.table({"x": [1]}))  # noqa: E731
    for attempt in (write, lambda: lake.dataset(long_name)):
        with pytest.raises(lakelet.InvalidNameError, match="a segment is at most 255 bytes"):
            attempt()
    assert lake.datasets() == []


WRITE = """
import sys, lakelet, pyarrow as pa
lake = lakelet.open(sys.argv[1])
lake.write_dataset("sales/orders", pa.table({"dt": ["2025-01-21"], "id": [3]}), partition_by=["dt"])
"""


@pytest.mark.parametrize(("point", "version"), [("manifest-written", 1), ("dataset-committed", 2)])
def test_a_write_killed_around_its_manifest_shows_the_old_version_or_the_whole_new_one(
    lake, point, version
) -> None:
    lake.write_dataset("sales/orders", pa.table({"dt": ["2025-01-20"], "id": [1]}), partition_by=["dt"])
    killed = subprocess.run(
        [sys.executable, "-c", WRITE, str(lake.root)],
        capture_output=True,
        env={**os.environ, "LAKELET_CRASH_AT": point},
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    fresh = lakelet.open(lake.root)
    ds = fresh.dataset("sales/orders")
    assert ds.version == version and ds.versions() == list(range(1, version + 1))
    assert sorted(ds.to_arrow().column("id").to_pylist()) == [1, 3][:version]
    commits = sorted((lake.root / "datasets" / "sales" / "orders" / "_delta_log").glob("*.json"))
    assert [int(c.name[:20]) + 1 for c in commits] == list(range(1, version + 1))
    assert fresh.fsck().ok and list((lake.root / "tmp").iterdir()) == []
    again = subprocess.run([sys.executable, "-c", WRITE, str(lake.root)], capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert lakelet.open(lake.root).dataset("sales/orders").version == version + 1


def test_a_manifest_is_on_disk_before_its_name(lake, monkeypatch) -> None:
    """What a kill cannot show, a power cut would: a manifest linked in before its bytes were
    written back. Its bytes are fsynced before the link, and the link after. (os.fsync and
    os.link are watched, then called as they are.)"""
    lake.write_dataset("d", pa.table({"id": [1]}))
    events: list[tuple[str, object]] = []
    fsync, link = os.fsync, os.link

    def watched_fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        fsync(fd)

    def watched_link(src, dst, *args, **kwargs) -> None:
        link(src, dst, *args, **kwargs)
        events.append(("link", os.fspath(dst)))

    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(os, "link", watched_link)
    lake.write_dataset("d", pa.table({"id": [2]}))
    monkeypatch.undo()
    manifest = lake.root / "datasets" / "d" / "_delta_log" / "00000000000000000001.json"
    linked = events.index(("link", os.fspath(manifest)))
    assert ("fsync", manifest.stat().st_ino) in events[:linked]
    assert ("fsync", manifest.parent.stat().st_ino) in events[linked:]


def test_bookmarks_and_run_logs_go_through_their_parser(lake, caplog) -> None:
    from lakelet.datasets._state import run_logs, write_run_log

    write_run_log(lake.context, "p", {"pipeline": "p", "ok": True, "rows": {"s": 1}})
    (lake.root / "logs" / "p" / "00000000T000000.000000Z-bad.json").write_bytes(b"[1, 2]")
    with caplog.at_level("WARNING", logger="lakelet"):
        assert [log["rows"] for log in run_logs(lake.context, "p")] == [{"s": 1}]
    assert "invalid run log logs/p/00000000T000000.000000Z-bad.json" in caplog.text
    state = lake.root / "state" / "p" / "state.json"
    state.parent.mkdir(parents=True)
    for bad in (b"[]", b'{"a": Infinity}', b"{" * 10, b'{"a":' * 100 + b"1" + b"}" * 100):
        state.write_bytes(bad)
        with pytest.raises(lakelet.CorruptRecordError, match="invalid pipeline state state/p/state.json"):
            lake.state("p").get()
