"""`lakelet ingest`: a real Singer tap (tap-postgres) against a real PostgreSQL, incrementally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from lakelet.datasets._state import run_logs

from . import servers
from .conftest import run_lakelet

TAP_BIN = str(Path(sys.executable).parent)  # tap-postgres is installed beside this Python


@pytest.fixture(scope="module")
def pg():
    with servers.postgres() as port:
        yield port


def _sql(port: int, statement: str) -> None:
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres") as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)


@pytest.fixture
def pipeline(pg, tmp_path, lake):
    table = f"orders_{os.getpid()}_{len(list(tmp_path.parent.iterdir()))}"
    _sql(
        pg,
        f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id serial primary key, "
        "customer text, amount numeric(10, 2), created_at timestamptz default now())",
    )
    (tmp_path / "tap.json").write_text(
        json.dumps(
            {"host": "127.0.0.1", "port": pg, "user": "postgres", "password": "", "database": "postgres"}
        )
    )
    (tmp_path / "pipeline.yaml").write_text(
        "name: orders-pipeline\n"
        "source:\n  tap: tap-postgres\n  config: tap.json\n"
        f"  select:\n    - {{stream: public-{table}, replication_key: id}}\n"
        "destination:\n  path: raw\n  partition_by: [dt]\n  compression: zstd\n"
    )
    env = {"LAKELET_HOME": str(lake.root), "PATH": f"{TAP_BIN}:{os.environ['PATH']}"}
    return {
        "port": pg,
        "table": table,
        "yaml": tmp_path / "pipeline.yaml",
        "env": env,
        "dataset": f"raw/postgres/public-{table}",
    }


def _ingest(p) -> subprocess.CompletedProcess:
    return run_lakelet("ingest", str(p["yaml"]), env=p["env"])


def test_only_new_rows_arrive_on_the_next_run(pipeline, lake) -> None:
    table = pipeline["table"]
    _sql(pipeline["port"], f"INSERT INTO {table} (customer, amount) VALUES ('alice', 9.5), ('bob', 12)")
    first = _ingest(pipeline)
    assert first.returncode == 0, first.stderr
    assert b"2 rows" in first.stdout
    _sql(pipeline["port"], f"INSERT INTO {pipeline['table']} (customer, amount) VALUES ('carol', 4.25)")
    second = _ingest(pipeline)
    assert second.returncode == 0 and b"1 rows" in second.stdout
    ds = lake.dataset(pipeline["dataset"])
    assert ds.version == 2 and sorted(ds.to_arrow().column("id").to_pylist()) == [1, 2, 3]
    assert all(f["relative"].startswith("dt=") for f in ds.files)
    state = lake.state("orders-pipeline").get()
    assert list(state["bookmarks"].values())[0]["replication_key_value"] == 3
    logs = run_logs(lake.context, "orders-pipeline")
    assert [log["ok"] for log in logs] == [True, True] and list(logs[1]["rows"].values()) == [1]
    third = _ingest(pipeline)  # nothing new: no new version
    assert third.returncode == 0 and lake.dataset(pipeline["dataset"]).version == 2
    rows = duckdb.sql(
        f"SELECT count(*), sum(amount) FROM read_parquet('{ds.folder}/**/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()
    assert rows == [(3, 25.75)]


def test_a_tap_that_dies_commits_nothing_and_keeps_the_state(pipeline, lake, tmp_path) -> None:
    _sql(pipeline["port"], f"INSERT INTO {pipeline['table']} (customer, amount) VALUES ('alice', 1)")
    assert _ingest(pipeline).returncode == 0
    state = lake.state("orders-pipeline").get()
    (tmp_path / "tap.json").write_text(
        json.dumps(
            {"host": "127.0.0.1", "port": servers.free_port(), "user": "postgres", "database": "postgres"}
        )
    )
    failed = _ingest(pipeline)
    err = failed.stderr.decode()
    assert failed.returncode == 1 and len(err.strip().splitlines()) == 1 and "tap-postgres" in err
    assert lake.state("orders-pipeline").get() == state
    assert lake.dataset(pipeline["dataset"]).version == 1
    assert run_logs(lake.context, "orders-pipeline")[-1]["ok"] is False


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("source: [not, a, mapping", "not valid YAML"),
        ("source:\n  tap: tap-nonexistent\n  config: tap.json\n", "unknown tap 'tap-nonexistent'"),
        ("source:\n  tap: tap-postgres\n", "source.config is required"),
    ],
)
def test_bad_pipelines_are_one_line(pipeline, lake, yaml_text, message) -> None:
    pipeline["yaml"].write_text(yaml_text)
    out = _ingest(pipeline)
    err = out.stderr.decode()
    assert out.returncode == 1 and message in err and len(err.strip().splitlines()) == 1
    assert lake.datasets() == [] and lake.state("orders-pipeline").get() == {}
