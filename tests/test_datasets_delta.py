"""Datasets as Delta tables among other Delta writers: checkpoints, tables delta-rs wrote."""

from __future__ import annotations

import deltalake
import pyarrow as pa
import pytest

import lakelet


def _orders(day: str, ids: list[int]) -> pa.Table:
    return pa.table({"dt": [day] * len(ids), "id": ids})


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_a_checkpoint_every_ten_commits_spares_a_fresh_reader_the_older_ones(
    remote, machine, tmp_path
) -> None:
    a = machine("a")
    for i in range(12):
        a.write_dataset("events", pa.table({"i": [i]}))
    log = tmp_path / "remote" / "datasets" / "events" / "_delta_log"
    assert (log / "00000000000000000010.checkpoint.parquet").is_file()
    assert (log / "_last_checkpoint").is_file()
    c = machine("c")
    ds = c.dataset("events")
    assert ds.version == 12 and sorted(ds.to_arrow().column("i").to_pylist()) == list(range(12))
    fetched = sorted(p.name for p in (c.root / "datasets" / "events" / "_delta_log").iterdir())
    # not the eleven commits up to the checkpoint
    assert fetched == ["00000000000000000010.checkpoint.parquet", "00000000000000000011.json"]
    assert ds.stats()["i"]["max"] == 11  # lakelet's statistics: in the latest commit
    assert deltalake.DeltaTable(str(ds.folder)).to_pyarrow_table().num_rows == 12
    assert sorted(c.dataset("events", version=11).to_arrow().column("i").to_pylist()) == list(range(11))
    c.write_dataset("events", pa.table({"i": [12]}))
    assert deltalake.DeltaTable(str(tmp_path / "remote" / "datasets" / "events")).version() == 12


def test_a_table_delta_rs_wrote_is_listed_read_and_written_on_top(lake) -> None:
    folder = lake.root / "datasets" / "external" / "orders"
    deltalake.write_deltalake(str(folder), _orders("2025-01-20", [1, 2]), partition_by=["dt"])
    deltalake.write_deltalake(str(folder), _orders("2025-01-21", [3]), partition_by=["dt"], mode="append")
    assert lake.datasets() == ["external/orders"]
    ds = lake.dataset("external/orders")
    assert ds.version == 2 and ds.num_rows == 3 and ds.partition_by == ["dt"]
    assert sorted(ds.to_arrow().column("id").to_pylist()) == [1, 2, 3]
    assert (ds.stats()["id"]["min"], ds.stats()["id"]["max"], ds.stats()["id"]["nulls"]) == (1, 3, 0)
    on_top = lake.write_dataset("external/orders", _orders("2025-01-22", [4]))
    assert on_top.version == 3 and on_top.num_rows == 4
    table = deltalake.DeltaTable(str(folder))
    assert table.version() == 2 and sorted(table.to_pyarrow_table().column("id").to_pylist()) == [1, 2, 3, 4]
    assert lake.dataset("external/orders", version=2).num_rows == 3
    with pytest.raises(lakelet.InvalidArgumentError, match=r"partitioned by \['dt'\], not \['id'\]"):
        lake.write_dataset("external/orders", _orders("2025-01-22", [5]), partition_by=["id"])
    deltalake.write_deltalake(str(folder), _orders("2025-01-23", [9]), mode="overwrite", partition_by=["dt"])
    assert lake.dataset("external/orders").to_arrow().column("id").to_pylist() == [9]
