"""Datasets against a hostile peer and a killed writer.

A peer with write access to the shared remote can write any commit file under
``datasets/<name>/_delta_log/``: garbage, or a well-formed one naming a file
outside the lake, a negative size, a partition value that is not a string.
Another machine reading it refuses it in one line naming the file and version,
writes nothing outside its lake root (nor anything inside), and keeps every other
dataset and every older version usable. A write killed before its commit leaves a
staging folder that the next ``fsck`` removes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import blake3
import fsspec
import pyarrow as pa
import pytest

import lakelet

from .conftest import run_lakelet, snapshot

# a peer reaches these two the way any other store is reached: through the same remote
ON_PEER_REMOTES = pytest.mark.parametrize("remote", ["file", "s3"], indirect=True)
# the parser's cases: each on a folder store (what reaches the parser is the same bytes)
ON_FOLDER_REMOTE = pytest.mark.parametrize("remote", ["file"], indirect=True)

COMMIT_0 = "datasets/orders/_delta_log/00000000000000000000.json"
COMMIT_1 = "datasets/orders/_delta_log/00000000000000000001.json"


def _orders(day: str, ids: list[int]) -> pa.Table:
    return pa.table({"dt": [day] * len(ids), "id": ids, "amount": [i * 1.5 for i in ids]})


CUSTOMERS = pa.table({"id": [1, 2], "name": ["ada", "grace"]})


def _fs(remote):
    """The remote's store as a peer sees it, afresh (no listing cached from an earlier call)."""
    fs, root = fsspec.core.url_to_fs(
        remote.url, skip_instance_cache=True, use_listings_cache=False, **remote.storage_options
    )
    return fs, root.rstrip("/")


def _peer_put(remote, key: str, data: bytes) -> None:
    fs, root = _fs(remote)
    if remote.kind == "file":  # a folder store needs the folders a bucket does without
        fs.makedirs(f"{root}/{key}".rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(f"{root}/{key}", data)


def _peer_get(remote, key: str) -> bytes:
    fs, root = _fs(remote)
    data: bytes = fs.cat_file(f"{root}/{key}")
    return data


def _digest(data: bytes) -> str:
    return f"blake3:{blake3.blake3(data).hexdigest()}"


def _shared(machine):
    """Machine a writes version 1 of 'orders' and a second dataset, 'customers'."""
    a = machine("a")
    a.write_dataset("orders", _orders("2025-01-20", [1, 2, 3]), partition_by=["dt"])
    a.write_dataset("customers", CUSTOMERS)
    return a


def _actions(remote, key: str = COMMIT_0) -> list[dict]:
    return [json.loads(line) for line in _peer_get(remote, key).splitlines()]


def _forged(remote, add=None, **info) -> list[dict]:
    """Version 2 of 'orders' (Delta version 1) as a peer forges it from the real version 1: an
    append of ``add`` (default: the real file again), with ``info`` in lakelet's commitInfo."""
    actions = _actions(remote)
    commit = next(a["commitInfo"] for a in actions if "commitInfo" in a)
    commit["lakelet"].update(version=2, **info)
    real = next(a["add"] for a in actions if "add" in a)
    return [{"commitInfo": commit}, {"add": real if add is None else add}]


def _encode(actions: list[dict]) -> bytes:
    return "\n".join(json.dumps(a) for a in actions).encode()


def _victim(machine, tmp_path: Path):
    """Another machine, whose lake root's parent holds nothing else: whatever shows up there
    beside the lake was written outside it."""
    victim = machine("victim/lake")
    assert victim.dataset("orders", version=1).num_rows == 3  # what it could read before
    assert victim.dataset("customers").to_arrow().equals(CUSTOMERS)
    return victim


def _assert_refused(victim, tmp_path: Path, error=lakelet.CorruptRecordError) -> None:
    """The forged version 2 is refused in one typed line that names it; nothing is written
    anywhere; every other dataset and version reads as before."""
    before = snapshot(victim.root)
    for attempt in (
        lambda: victim.dataset("orders").to_arrow(),
        lambda: victim.dataset("orders", version=2).to_arrow(),
        lambda: victim.write_dataset("orders", _orders("2025-01-21", [4])),  # an append builds on it
        lambda: victim.write_dataset("orders", _orders("2025-01-21", [4]), mode="overwrite"),
    ):
        with pytest.raises(error) as raised:
            attempt()
        message = str(raised.value)
        assert "\n" not in message and "'orders'" in message
        if error is lakelet.CorruptRecordError:
            assert "version 2 (Delta version 1)" in message and COMMIT_1 in message
            assert raised.value.record == COMMIT_1
    assert sorted(p.name for p in (tmp_path / "victim").iterdir()) == ["lake"]  # nothing beside it
    assert snapshot(victim.root) == before  # nor anything in it, the bad commit included

    assert victim.datasets() == ["customers", "orders"]
    assert victim.dataset("orders", version=1).to_arrow().column("id").to_pylist() == [1, 2, 3]
    assert victim.dataset("customers").to_arrow().equals(CUSTOMERS)
    assert victim.dataset("orders", version=1).versions() == [1, 2]  # the number stays taken
    assert victim.fsck().ok

    listing = run_lakelet("datasets", "--json", env={"LAKELET_HOME": str(victim.root)})
    assert listing.returncode == 0, listing.stderr.decode()
    assert [d["name"] for d in json.loads(listing.stdout)] == ["customers"]
    warning = listing.stderr.decode().strip()
    assert len(warning.splitlines()) == 1 and "'orders'" in warning, warning


@ON_PEER_REMOTES
@pytest.mark.parametrize("how", ["up the tree", "absolute", "encoded", "url"])
def test_a_commit_naming_a_file_outside_the_table_writes_nothing_there(
    remote, machine, tmp_path, how
) -> None:
    """The forged file's bytes are on the remote under the key the commit names: what lakelet
    fetched, it would write beside the lake (a .pth file there runs in every Python started
    with that folder on its path)."""
    _shared(machine)
    evil = b"import os; os.system('echo owned')\n"
    # from victim/lake/datasets/orders, each lands beside victim/lake
    relative = {
        "up the tree": "../../../evil.pth",
        "absolute": str(tmp_path / "victim" / "evil.pth"),
        "encoded": "%2E%2E/%2E%2E/%2E%2E/evil.parquet",
        "url": (tmp_path / "victim" / "evil.parquet").as_uri(),
    }[how]
    if how == "up the tree":
        _peer_put(remote, f"datasets/orders/{relative}", evil)
    add = {"path": relative, "partitionValues": {"dt": "2025-01-20"}, "size": len(evil), "dataChange": True}
    _peer_put(remote, COMMIT_1, _encode(_forged(remote, add=add)))
    _assert_refused(_victim(machine, tmp_path), tmp_path)
    assert not (tmp_path / "victim" / "evil.pth").exists()


def _with_digest(add: dict, digest: str) -> dict:
    return {**add, "tags": {"lakelet.digest": digest}}


@ON_FOLDER_REMOTE
@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda f: {**f, "size": -5}, id="negative size"),
        pytest.param(lambda f: {**f, "stats": json.dumps({"numRecords": 2**70})}, id="huge row count"),
        pytest.param(lambda f: {**f, "stats": "{not json"}, id="stats not json"),
        pytest.param(lambda f: {**f, "partitionValues": {"dt": 5}}, id="partition value not a string"),
        pytest.param(lambda f: {**f, "partitionValues": {"region": "eu"}}, id="not the partition columns"),
        pytest.param(lambda f: _with_digest(f, "blake3:../../x"), id="digest not hex"),
        pytest.param(lambda f: _with_digest(f, "blake3:" + "0" * 64), id="not named after its digest"),
        pytest.param(
            lambda f: {**f, "path": "dt=2025-01-20//" + f["path"].split("/")[-1]}, id="empty segment"
        ),
        pytest.param(lambda f: {**f, "path": f["path"] + "%00.txt"}, id="NUL in path"),
        pytest.param(lambda f: {**f, "path": "_delta_log/00000000000000000003.json"}, id="not a data file"),
        pytest.param(
            lambda f: {**f, "deletionVector": {"storageType": "u"}}, id="undeclared deletion vector"
        ),
    ],
)
def test_a_well_formed_commit_with_a_bad_add_is_refused(remote, machine, tmp_path, forge) -> None:
    _shared(machine)
    real = next(a["add"] for a in _actions(remote) if "add" in a)
    _peer_put(remote, COMMIT_1, _encode(_forged(remote, add=forge(real))))
    _assert_refused(_victim(machine, tmp_path), tmp_path)


@ON_FOLDER_REMOTE
@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(lambda body, meta: b"\x00\xff{not json", id="not json"),
        pytest.param(lambda body, meta: body[: len(body) // 2], id="truncated"),
        pytest.param(lambda body, meta: b"[]", id="not an object"),
        pytest.param(lambda body, meta: body + b'\n{"add": "all of them"}', id="wrong type"),
        pytest.param(lambda body, meta: body + b'\n{"sneaky": {}}', id="unknown action"),
        pytest.param(
            lambda body, meta: (
                body + b"\n" + json.dumps({"metaData": {**meta, "schemaString": "zz"}}).encode()
            ),
            id="bad schema",
        ),
        pytest.param(
            lambda body, meta: (
                body + b"\n" + json.dumps({"metaData": {**meta, "partitionColumns": ["nope"]}}).encode()
            ),
            id="partition column not in the schema",
        ),
        pytest.param(
            lambda body, meta: (
                body
                + b"\n"
                + json.dumps(
                    {
                        "metaData": {
                            **meta,
                            "schemaString": json.dumps(
                                {
                                    "type": "struct",
                                    "fields": [
                                        f
                                        for f in json.loads(meta["schemaString"])["fields"]
                                        if f["name"] != "dt"
                                    ],
                                }
                            ),
                            "partitionColumns": [],
                        }
                    }
                ).encode()
            ),
            id="schema break",
        ),
        pytest.param(
            lambda body, meta: body.replace(b'"count": 3', b'"count": "many"', 1), id="bad statistics"
        ),
        pytest.param(
            lambda body, meta: body.replace(b'"version": 2', b'"version": 7', 1), id="wrong version"
        ),
        pytest.param(lambda body, meta: b"[" * 100_000, id="nested too deep"),
    ],
)
def test_a_garbage_commit_is_refused_and_the_rest_stays_usable(remote, machine, tmp_path, garbage) -> None:
    _shared(machine)
    meta = next(a["metaData"] for a in _actions(remote) if "metaData" in a)
    _peer_put(remote, COMMIT_1, garbage(_encode(_forged(remote)), meta))
    _assert_refused(_victim(machine, tmp_path), tmp_path)


@ON_PEER_REMOTES
@pytest.mark.parametrize(
    ("protocol", "feature"),
    [
        (
            {
                "minReaderVersion": 3,
                "minWriterVersion": 7,
                "readerFeatures": ["deletionVectors"],
                "writerFeatures": ["deletionVectors"],
            },
            "deletionVectors",
        ),
        ({"minReaderVersion": 2, "minWriterVersion": 5}, "column mapping"),
    ],
)
def test_a_table_using_a_feature_lakelet_does_not_support_is_one_line_naming_it(
    remote, machine, tmp_path, protocol, feature
) -> None:
    _shared(machine)
    _peer_put(remote, COMMIT_1, _encode([*_forged(remote), {"protocol": protocol}]))
    victim = _victim(machine, tmp_path)
    with pytest.raises(lakelet.LakeletError, match=f"'orders' is a Delta table using {feature}") as raised:
        victim.dataset("orders")
    assert raised.value.feature.startswith(feature) and "\n" not in str(raised.value)
    info = run_lakelet("info", "datasets/orders", env={"LAKELET_HOME": str(victim.root)})
    assert info.returncode == 1 and len(info.stderr.decode().splitlines()) == 1
    assert f"using {feature}" in info.stderr.decode()


@ON_PEER_REMOTES
def test_markup_in_a_commit_is_shown_as_text(remote, machine, tmp_path) -> None:
    """A creator, a column name or a value in the data that reads as rich markup is printed as
    it is, never interpreted ("[/red]" alone would stop the command with a traceback)."""
    a = _shared(machine)
    a.write_dataset("notes", pa.table({"[/b]": ["[/i]", "plain"]}))
    _peer_put(remote, COMMIT_1, _encode(_forged(remote, creator="[/red]")))
    env = {"LAKELET_HOME": str(_victim(machine, tmp_path).root)}
    listing = run_lakelet("datasets", env=env)
    assert listing.returncode == 0 and listing.stderr == b"", listing.stderr.decode()
    assert [line.split()[0] for line in listing.stdout.decode().splitlines()[1:]] == [
        "customers",
        "notes",
        "orders",
    ]
    orders = run_lakelet("info", "datasets/orders", env=env)
    assert orders.returncode == 0 and b"by [/red]" in orders.stdout, orders.stderr.decode()
    notes = run_lakelet("info", "datasets/notes", env=env)
    assert notes.returncode == 0 and b"[/b]" in notes.stdout and b"[/i]" in notes.stdout, notes.stderr


@ON_PEER_REMOTES
def test_a_refused_commit_quoting_markup_is_one_error_line(remote, machine, tmp_path) -> None:
    _shared(machine)
    _peer_put(remote, COMMIT_1, _encode(_forged(remote, mode="[/red]")))
    env = {"LAKELET_HOME": str(_victim(machine, tmp_path).root)}
    info = run_lakelet("info", "datasets/orders", env=env)
    assert info.returncode == 1 and info.stdout == b""
    assert info.stderr.decode().splitlines() == [
        f"error: dataset 'orders' version 2 (Delta version 1): invalid commit {COMMIT_1} (on the remote): "
        "mode is not append, overwrite or merge but '[/red]'; version 1 and older can still be read"
    ]


@ON_PEER_REMOTES
def test_statistics_that_disagree_with_their_sample_still_read(remote, machine, tmp_path) -> None:
    """A sample reaching past min and max (a well-formed lie) is clamped into the histogram."""
    _shared(machine)
    forged = _forged(remote)
    stats = forged[0]["commitInfo"]["lakelet"]["stats"]["id"]
    stats.update(min=1, max=3)
    stats["sample"] = {"seen": 4, "values": [-1000.0, 2.0, 1e300, {"float": "inf"}]}
    _peer_put(remote, COMMIT_1, _encode(forged))
    stats = _victim(machine, tmp_path).dataset("orders").stats()["id"]
    assert stats["quantiles"]["0.5"] == 1e300 and sum(stats["histogram"]["counts"]) == 3


def test_statistics_of_a_column_holding_infinities_read_back(lake) -> None:
    lake.write_dataset("readings", pa.table({"v": [float("-inf"), 1.0, float("inf"), float("nan")]}))
    stats = lakelet.open(lake.root).dataset("readings").stats()["v"]
    assert (stats["min"], stats["quantiles"]["0.5"], stats["max"]) == (float("-inf"), 1.0, float("inf"))
    assert "histogram" not in stats  # no finite bins between two infinities
    import deltalake  # the commit holding them is still JSON every Delta reader parses

    assert deltalake.DeltaTable(str(lake.root / "datasets" / "readings")).to_pyarrow_table().num_rows == 4


@ON_PEER_REMOTES
def test_a_dataset_under_an_invalid_name_is_not_listed(remote, machine, tmp_path) -> None:
    a = _shared(machine)
    body = _peer_get(remote, "datasets/customers/_delta_log/00000000000000000000.json")
    _peer_put(remote, "datasets/bad\x01name/_delta_log/00000000000000000000.json", body)
    assert a.datasets() == ["customers", "orders"]
    listing = run_lakelet("datasets", "--json", env={"LAKELET_HOME": str(a.root)})
    assert listing.returncode == 0, listing.stderr.decode()
    assert [d["name"] for d in json.loads(listing.stdout)] == ["customers", "orders"]


@ON_PEER_REMOTES
def test_fsck_quarantines_a_bad_local_commit_and_the_remote_copy_is_read_again(
    remote, machine, tmp_path
) -> None:
    """A local copy that rotted (or that an older lakelet kept from a peer) is moved aside and
    reported; the remote's copy is fetched again on the next read."""
    _shared(machine)
    victim = _victim(machine, tmp_path)
    local = victim.root / COMMIT_0
    good = local.read_bytes()
    local.chmod(0o644)
    local.write_bytes(good[:-10])
    with pytest.raises(lakelet.CorruptRecordError, match="local copy"):
        victim.dataset("orders")

    report = victim.fsck()
    assert report.manifests_quarantined == [COMMIT_0] and not report.ok
    assert (victim.root / "quarantine" / COMMIT_0).is_file()
    assert victim.dataset("orders").to_arrow().column("id").to_pylist() == [1, 2, 3]
    assert local.read_bytes() == good


def test_cli_fsck_reports_a_quarantined_commit_in_one_line(lake) -> None:
    lake.write_dataset("orders", _orders("2025-01-20", [1]))
    local = lake.root / COMMIT_0
    local.chmod(0o644)
    local.write_bytes(b"{}")
    checked = run_lakelet("fsck", env={"LAKELET_HOME": str(lake.root)})
    assert checked.returncode == 1
    lines = checked.stderr.decode().splitlines()
    assert lines == [f"invalid dataset commit: {COMMIT_0} (moved to quarantine/)"]
    assert lakelet.open(lake.root).datasets() == []  # its only version is gone: no dataset left


def test_a_dataset_listing_in_the_ui_skips_a_bad_commit(lake) -> None:
    from lakelet.ui import _queries

    lake.write_dataset("orders", _orders("2025-01-20", [1]))
    lake.write_dataset("customers", CUSTOMERS)
    local = lake.root / COMMIT_0
    local.chmod(0o644)
    local.write_bytes(b"garbage")
    assert [d["name"] for d in _queries.datasets(lake)] == ["customers"]


WRITE = """
import sys, lakelet, pyarrow as pa
lake = lakelet.open(sys.argv[1])
lake.write_dataset("orders", pa.table({"dt": ["2025-01-21"], "id": [3]}), partition_by=["dt"])
"""


def test_fsck_removes_the_staging_folder_of_a_killed_dataset_write(lake) -> None:
    lake.write_dataset("orders", pa.table({"dt": ["2025-01-20"], "id": [1]}), partition_by=["dt"])
    killed = subprocess.run(
        [sys.executable, "-c", WRITE, str(lake.root)],
        capture_output=True,
        env={**os.environ, "LAKELET_CRASH_AT": "dataset-files-staged"},
        timeout=120,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    staged = [p for p in (lake.root / "tmp").iterdir() if "-dataset-" in p.name]
    assert len(staged) == 1 and list(staged[0].rglob("*.parquet")), staged
    running = lake.root / "tmp" / f"{os.getpid()}-dataset-0123456789ab"  # a live writer's: kept
    (running / "dt=2025-01-22").mkdir(parents=True)

    report = lakelet.open(lake.root).fsck()
    assert report.ok and not staged[0].exists() and running.is_dir()
    fresh = lakelet.open(lake.root)
    assert fresh.dataset("orders").version == 1
    again = subprocess.run([sys.executable, "-c", WRITE, str(lake.root)], capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()
    assert sorted(lakelet.open(lake.root).dataset("orders").to_arrow().column("id").to_pylist()) == [1, 3]


CHECKPOINT_10 = "datasets/orders/_delta_log/00000000000000000010.checkpoint.parquet"


def _forge_checkpoint(remote, column: str, value) -> None:
    """The peer rewrites one field of the first ``add`` row of the checkpoint at Delta version 10."""
    import io

    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(_peer_get(remote, CHECKPOINT_10)))
    rows = table.to_pylist()
    first = next(r for r in rows if r["add"] is not None)
    first["add"][column] = value
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), out)
    _peer_put(remote, CHECKPOINT_10, out.getvalue())


@ON_FOLDER_REMOTE
@pytest.mark.parametrize(
    ("column", "value"),
    [
        pytest.param("path", "../../../evil.parquet", id="up the tree"),
        pytest.param("path", "%2E%2E/%2E%2E/%2E%2E/evil.parquet", id="encoded"),
        pytest.param("path", "/tmp/evil.parquet", id="absolute"),
        pytest.param("path", "file:///tmp/evil.parquet", id="url"),
        pytest.param("path", "_delta_log/00000000000000000003.parquet", id="in the log"),
        pytest.param("path", "dt=2025-01-20/evil.txt", id="not parquet"),
        pytest.param("size", -5, id="negative size"),
        pytest.param("partitionValues", [("region", "eu")], id="not the partition columns"),
        pytest.param("tags", [("lakelet.digest", "blake3:" + "0" * 64)], id="not named after its digest"),
        pytest.param("tags", [("lakelet.digest", "blake3:../../x")], id="digest not hex"),
        pytest.param(
            "tags", [("lakelet.digest", "blake3:" + "0" * 64), ("lakelet.digest", "x")], id="two digests"
        ),
    ],
)
def test_a_forged_checkpoint_row_is_refused(remote, machine, tmp_path, column, value) -> None:
    """A checkpoint stands for every commit before it: a row in it is checked as the same
    ``add`` in a commit file is, and a bad one is refused in one line naming the checkpoint."""
    a = _shared(machine)
    for i in range(10):  # Delta version 10: lakelet writes the checkpoint
        a.write_dataset("orders", _orders("2025-01-20", [10 + i]))
    _forge_checkpoint(remote, column, value)
    victim = machine("victim/lake")
    with pytest.raises(lakelet.CorruptRecordError) as raised:
        victim.dataset("orders")
    message = str(raised.value)
    assert "\n" not in message and CHECKPOINT_10 in message and "'orders'" in message
    assert sorted(p.name for p in (tmp_path / "victim").iterdir()) == ["lake"]  # nothing beside it
    assert not (victim.root / CHECKPOINT_10).exists()  # a refused copy is not kept
    assert victim.dataset("orders", version=10).num_rows == 12  # before the checkpoint: read
