"""`lakelet ingest`: a real Singer tap (tap-postgres) against a real PostgreSQL, incrementally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import deltalake
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
    assert all(f["relative"].startswith("dt=") for f in ds.file_details)
    state = lake.state("orders-pipeline").get()
    assert list(state["bookmarks"].values())[0]["replication_key_value"] == 3
    logs = run_logs(lake.context, "orders-pipeline")
    assert [log["ok"] for log in logs] == [True, True] and list(logs[1]["rows"].values()) == [1]
    third = _ingest(pipeline)  # nothing new: no new version
    assert third.returncode == 0 and lake.dataset(pipeline["dataset"]).version == 2
    orders = deltalake.DeltaTable(str(ds.folder)).to_pyarrow_dataset()
    con = duckdb.connect()
    con.register("orders", orders)
    assert con.sql("SELECT count(*), sum(amount) FROM orders").fetchall() == [(3, 25.75)]


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


# A second, file-based tap from PyPI: tap-jsonl, in its own venv under .taps/ (scripts/test
# installs it there, as Meltano installs each tap: its singer-sdk pin clashes with tap-postgres's).
JSONL_TAP = Path(__file__).resolve().parent.parent / ".taps" / "tap-jsonl" / "bin" / "tap-jsonl"


@pytest.fixture
def jsonl(tmp_path, lake):
    assert JSONL_TAP.is_file(), f"{JSONL_TAP} is missing: scripts/test installs tap-jsonl there"
    data = tmp_path / "customers.jsonl"
    data.write_text('{"id": 1, "name": "ada"}\n{"id": 2, "name": "grace"}\n')
    (tmp_path / "tap.json").write_text(
        json.dumps({"path": str(data), "stream_name": "customers", "primary_keys": ["id"]})
    )
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(  # DataSpoc Pipe's keys, unchanged
        "source:\n  tap: tap-jsonl\n  config: tap.json\n  streams: [customers]\n"
        "destination:\n  path: raw\n  compression: zstd\nincremental:\n  enabled: true\n"
    )
    path = f"{JSONL_TAP.parent}:{os.environ['PATH']}"
    return {"data": data, "yaml": pipeline, "env": {"LAKELET_HOME": str(lake.root), "PATH": path}}


def test_a_tap_that_resends_the_whole_file_leaves_no_duplicates(jsonl, lake) -> None:
    first = run_lakelet("ingest", str(jsonl["yaml"]), env=jsonl["env"])
    assert first.returncode == 0, first.stderr.decode()
    with jsonl["data"].open("a") as f:  # the file changes: the tap sends all of it again
        f.write('{"id": 2, "name": "grace hopper"}\n{"id": 3, "name": "edsger"}\n')
    os.utime(jsonl["data"], (os.path.getmtime(jsonl["data"]) + 5,) * 2)
    second = run_lakelet("ingest", str(jsonl["yaml"]), env=jsonl["env"])
    assert second.returncode == 0, second.stderr.decode()
    ds = lake.dataset("raw/jsonl/customers")
    assert ds.version == 2
    rows = sorted(zip(*ds.to_arrow().select(["id", "name"]).to_pydict().values(), strict=True))
    assert rows == [(1, "ada"), (2, "grace hopper"), (3, "edsger")]  # merged on key_properties
    assert ds.commit_info["lineage"] == {"pipeline": "pipeline", "tap": "tap-jsonl", "stream": "customers"}
    table = deltalake.DeltaTable(str(ds.folder)).to_pyarrow_table()
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3]


@pytest.mark.parametrize("bucket", ["s3://someone-elses-bucket", "same"])
def test_destination_bucket_is_honoured_or_refused_never_ignored(jsonl, tmp_path, bucket) -> None:
    import lakelet

    remote = tmp_path / "bucket" / "team-lake"
    shared = lakelet.init(tmp_path / "shared", remote=remote.as_uri())
    wanted = (tmp_path / "bucket").as_uri() if bucket == "same" else bucket
    text = jsonl["yaml"].read_text().replace("destination:\n", f"destination:\n  bucket: {wanted}\n")
    jsonl["yaml"].write_text(text)
    out = run_lakelet("ingest", str(jsonl["yaml"]), env={**jsonl["env"], "LAKELET_HOME": str(shared.root)})
    if bucket == "same":  # the bucket holds the lake's remote: the tables land there
        assert out.returncode == 0, out.stderr.decode()
        assert (remote / "datasets" / "raw" / "jsonl" / "customers" / "_delta_log").is_dir()
        return
    err = out.stderr.decode()
    assert out.returncode == 1 and len(err.strip().splitlines()) == 1
    assert "destination.bucket s3://someone-elses-bucket is not where this lake keeps its datasets" in err
    assert shared.datasets() == [] and not (remote / "datasets").exists()


def test_a_forged_bookmark_stops_the_run_in_one_line(jsonl, lake) -> None:
    assert run_lakelet("ingest", str(jsonl["yaml"]), env=jsonl["env"]).returncode == 0
    state = lake.root / "state" / "pipeline" / "state.json"
    state.write_bytes(b'{"bookmarks": NaN}')
    out = run_lakelet("ingest", str(jsonl["yaml"]), env=jsonl["env"])
    err = out.stderr.decode()
    assert out.returncode == 1 and len(err.strip().splitlines()) == 1
    assert "invalid pipeline state state/pipeline/state.json" in err
    assert lake.dataset("raw/jsonl/customers").version == 1


def test_ingest_draws_a_bar_on_a_terminal_while_it_writes(jsonl) -> None:
    from .test_progress import _run_on_terminal

    env = {**jsonl["env"], "LAKELET_PROGRESS_DELAY": "0"}
    code, screen = _run_on_terminal("ingest", str(jsonl["yaml"]), env=env)
    assert code == 0, screen
    assert b"writing pipeline.yaml" in screen and b"ingested customers: 2 rows" in screen
