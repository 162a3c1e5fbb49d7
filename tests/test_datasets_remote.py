"""Datasets on a shared remote: a consumer machine gets the Delta table, and Delta readers open
it from the remote itself (delta-rs against moto S3, Azurite, the GCS emulator, a folder store as file://)."""

from __future__ import annotations

import json

import deltalake
import polars as pl
import pyarrow as pa
import pytest

from .conftest import run_lakelet


def _orders(day: str, ids: list[int]) -> pa.Table:
    return pa.table({"dt": [day] * len(ids), "id": ids})


def _delta_options(remote) -> dict[str, str]:
    """delta-rs's own options for the test servers (object_store's names, not fsspec's)."""
    if remote.kind == "s3":
        env = remote.env
        return {
            "AWS_ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
            "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": env["AWS_DEFAULT_REGION"],
            "AWS_ALLOW_HTTP": "true",
        }
    if remote.kind == "azure":
        parts = dict(
            p.split("=", 1) for p in remote.env["AZURE_STORAGE_CONNECTION_STRING"].strip(";").split(";")
        )
        return {
            "account_name": parts["AccountName"],
            "account_key": parts["AccountKey"],
            "endpoint": parts["BlobEndpoint"],
            "allow_http": "true",
        }
    if remote.kind == "gcs":
        # object_store takes the emulator's URL and "no OAuth" from a service-account key
        # (its fields gcs_base_url and disable_oauth, made for fake-gcs-server)
        key = {
            "private_key": "",
            "private_key_id": "",
            "client_email": "",
            "gcs_base_url": remote.env["STORAGE_EMULATOR_HOST"],
            "disable_oauth": True,
        }
        return {"google_service_account_key": json.dumps(key), "allow_http": "true"}
    return {}


def test_a_consumer_machine_gets_the_table_and_readers_open_the_remote(remote, machine) -> None:
    a = machine("a")
    a.write_dataset("sales/orders", _orders("2025-01-20", [1, 2]), partition_by=["dt"])
    a.write_dataset("sales/orders", _orders("2025-01-21", [3]), partition_by=["dt"])
    a.write_dataset("sales/orders", _orders("2025-01-22", [7, 8, 9]), partition_by=["dt"], mode="overwrite")

    b = machine("b")
    env = {"LAKELET_HOME": str(b.root), **remote.env}
    pulled = run_lakelet("pull", "datasets/sales/orders", env=env)
    assert pulled.returncode == 0, pulled.stderr.decode()
    assert b"dataset sales/orders version 3 is local" in pulled.stdout
    folder = str(b.root / "datasets" / "sales" / "orders")
    table = deltalake.DeltaTable(folder)  # on b, nothing of lakelet's needed any more
    assert table.version() == 2 and sorted(table.to_pyarrow_table().column("id").to_pylist()) == [7, 8, 9]
    assert sorted(pl.read_delta(folder)["id"].to_list()) == [7, 8, 9]
    assert not list((b.root / "datasets" / "sales" / "orders").glob("dt=2025-01-20/*.parquet"))

    url = run_lakelet("url", "datasets/sales/orders", env=env)
    assert url.returncode == 0, url.stderr.decode()
    assert (
        url.stdout.decode().strip() == f"{remote.url}/datasets/sales/orders" == b.url("datasets/sales/orders")
    )
    options = _delta_options(remote)
    on_remote = deltalake.DeltaTable(f"{remote.url}/datasets/sales/orders", storage_options=options)
    assert sorted(on_remote.to_pyarrow_table().column("id").to_pylist()) == [7, 8, 9]
    first = deltalake.DeltaTable(f"{remote.url}/datasets/sales/orders", version=0, storage_options=options)
    assert sorted(first.to_pyarrow_table().column("id").to_pylist()) == [1, 2]
    polars_rows = pl.read_delta(f"{remote.url}/datasets/sales/orders", storage_options=options)
    assert sorted(polars_rows["id"].to_list()) == [7, 8, 9]


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_to_arrow_on_a_consumer_leaves_a_folder_any_engine_reads(remote, machine) -> None:
    a = machine("a")
    a.write_dataset("d", pa.table({"id": [1, 2]}))
    a.write_dataset("d", pa.table({"id": [3]}))
    b = machine("b")
    ds = b.dataset("d")
    assert sorted(ds.to_arrow().column("id").to_pylist()) == [1, 2, 3]
    assert sorted(deltalake.DeltaTable(str(ds.folder)).to_pyarrow_table().column("id").to_pylist()) == [
        1,
        2,
        3,
    ]
    listing = run_lakelet("datasets", "--json", env={"LAKELET_HOME": str(b.root)})
    assert [d["name"] for d in json.loads(listing.stdout)] == ["d"]
