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


def _former_format(lake, name: str, versions: list[tuple[str, list[tuple[str, list[int]]]]]) -> None:
    """Dataset ``name`` as lakelet kept it before Delta: content-named Parquet files in Hive
    folders and one manifest per version (``_manifests/<8 digits>.json``)."""
    import io
    from datetime import UTC, datetime

    import blake3
    import pyarrow.parquet as pq

    from lakelet.core._digest import Digest
    from lakelet.datasets._manifest import Manifest, ManifestFile

    folder = lake.root / "datasets" / name
    files: tuple = ()
    rows = 0
    for number, (mode, parts) in enumerate(versions, start=1):
        written = []
        for day, ids in parts:
            buffer = io.BytesIO()
            pq.write_table(pa.table({"id": ids}), buffer)
            data = buffer.getvalue()
            digest = blake3.blake3(data).hexdigest()
            relative = f"dt={day}/part-{digest[:32]}.parquet"
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            (folder / relative).write_bytes(data)
            written.append(ManifestFile(relative, Digest("blake3", digest), len(data), len(ids), {"dt": day}))
        added = sum(f.rows for f in written)
        files = (files if mode == "append" else ()) + tuple(written)
        rows = (rows if mode == "append" else 0) + added
        manifest = Manifest(
            dataset=name,
            version=number,
            parent=number - 1 or None,
            mode=mode,
            created_at=datetime(2025, 1, number, tzinfo=UTC).isoformat(),
            creator="old@example.com",
            schema=pa.schema({"dt": pa.string(), "id": pa.int64()}),
            files=files,
            num_rows=rows,
            stats={"id": {"type": "int64", "count": rows, "nulls": 0, "min": None, "max": None}},
            write={"rows": added, "files": len(written)},
        )
        (folder / "_manifests").mkdir(exist_ok=True)
        (folder / "_manifests" / f"{number:08d}.json").write_bytes(manifest.encode())


def test_a_former_manifest_dataset_is_converted_without_rewriting_data(lake) -> None:
    from .conftest import run_lakelet

    history = [
        ("append", [("2025-01-20", [1, 2])]),
        ("append", [("2025-01-21", [3])]),
        ("overwrite", [("2025-01-22", [7, 8])]),
    ]
    _former_format(lake, "orders", history)
    _former_format(lake, "customers", [("append", [("2025-01-20", [10])])])
    data = {p: p.stat().st_mtime_ns for p in (lake.root / "datasets").rglob("*.parquet")}
    assert lake.datasets() == ["customers", "orders"]
    with pytest.raises(lakelet.InvalidArgumentError, match="lakelet fsck --upgrade"):
        lake.dataset("orders")

    upgraded = run_lakelet("fsck", "--upgrade", env={"LAKELET_HOME": str(lake.root)})
    assert upgraded.returncode == 0, upgraded.stderr.decode()
    assert upgraded.stdout.decode().splitlines()[:2] == [
        "dataset customers: converted to a Delta table",
        "dataset orders: converted to a Delta table",
    ]
    folder = str(lake.root / "datasets" / "orders")
    for version, ids in ((1, [1, 2]), (2, [1, 2, 3]), (3, [7, 8])):
        assert sorted(lake.dataset("orders", version=version).to_arrow().column("id").to_pylist()) == ids
        table = deltalake.DeltaTable(folder, version=version - 1).to_pyarrow_table()
        assert sorted(table.column("id").to_pylist()) == ids
    assert lake.dataset("orders").summary()["creator"] == "old@example.com"
    assert {p: p.stat().st_mtime_ns for p in (lake.root / "datasets").rglob("*.parquet")} == data
    assert lakelet.open(lake.root).fsck(upgrade=True).datasets_upgraded == []  # once only


def test_a_former_manifest_dataset_is_converted_on_its_first_write(lake) -> None:
    _former_format(lake, "orders", [("append", [("2025-01-20", [1, 2])]), ("append", [("2025-01-21", [3])])])
    ds = lake.write_dataset("orders", _orders("2025-01-22", [4]), partition_by=["dt"])
    assert ds.version == 3 and sorted(ds.to_arrow().column("id").to_pylist()) == [1, 2, 3, 4]
    assert deltalake.DeltaTable(str(ds.folder)).version() == 2


@pytest.mark.parametrize(
    "column",
    [
        pa.array([7, 2**63], pa.uint64()),
        pa.array([[1], [2**64 - 1, None]], pa.list_(pa.uint64())),  # nested: the same long
    ],
    ids=["uint64", "list<uint64>"],
)
def test_a_uint64_value_no_delta_reader_can_read_is_one_error_and_nothing_written(lake, column) -> None:
    # Delta has no unsigned integers: a uint64 column is a `long`, which delta-rs refuses to
    # read past 2**63 - 1 (and others read wrapped). The second batch holds the value, so the
    # first one has been streamed to a file already when the error comes.
    first = lake.write_dataset("u", pa.table({"u": column.slice(0, 1)}))
    before = sorted(p.relative_to(lake.root) for p in lake.root.rglob("*") if p.is_file())
    schema = pa.schema([("u", column.type)])
    batches = [pa.record_batch([column.slice(0, 1)], schema=schema), pa.record_batch([column], schema=schema)]
    with pytest.raises(lakelet.LakeletError, match=r"column 'u' holds \d+, past .*nothing was written") as e:
        lake.write_dataset("u", pa.RecordBatchReader.from_batches(schema, batches))
    assert isinstance(e.value, lakelet.InvalidArgumentError) and "\n" not in str(e.value)
    after = sorted(p.relative_to(lake.root) for p in lake.root.rglob("*") if p.is_file())
    assert after == before and lake.dataset("u").version == first.version == 1
    assert deltalake.DeltaTable(str(first.folder)).to_pyarrow_table().num_rows == 1
