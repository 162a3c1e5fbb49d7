"""Datasets against a hostile peer and a killed writer.

A peer with write access to the shared remote can write any manifest under
``datasets/<name>/_manifests/``: garbage, or a well-formed one naming a file
outside the lake, a negative size, a partition value that is not a string.
Another machine reading it refuses it in one line, writes nothing outside its
lake root (nor anything inside), and keeps every other dataset and every older
version usable. A write killed before its manifest leaves a staging folder that
the next ``fsck`` removes.
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

MANIFEST_2 = "datasets/orders/_manifests/00000002.json"


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


def _forged(remote, **changes) -> dict:
    """Version 2 of 'orders' as a peer forges it from the real version 1."""
    body = json.loads(_peer_get(remote, "datasets/orders/_manifests/00000001.json"))
    body.update(version=2, parent=1, **changes)
    return body


def _victim(machine, tmp_path: Path):
    """Another machine, whose lake root's parent holds nothing else: whatever shows up there
    beside the lake was written outside it."""
    victim = machine("victim/lake")
    assert victim.dataset("orders", version=1).num_rows == 3  # what it could read before
    assert victim.dataset("customers").to_arrow().equals(CUSTOMERS)
    return victim


def _assert_refused(victim, tmp_path: Path, capsys=None) -> None:
    """The forged version 2 is refused in one typed line that names it; nothing is written
    anywhere; every other dataset and version reads as before."""
    before = snapshot(victim.root)
    for attempt in (
        lambda: victim.dataset("orders").to_arrow(),
        lambda: victim.dataset("orders", version=2).to_arrow(),
        lambda: victim.write_dataset("orders", _orders("2025-01-21", [4])),  # an append builds on it
    ):
        with pytest.raises(lakelet.CorruptRecordError) as raised:
            attempt()
        message = str(raised.value)
        assert "\n" not in message and "'orders' version 2" in message and MANIFEST_2 in message
        assert raised.value.record == MANIFEST_2
    assert sorted(p.name for p in (tmp_path / "victim").iterdir()) == ["lake"]  # nothing beside it
    assert snapshot(victim.root) == before  # nor anything in it, the bad manifest included

    assert victim.datasets() == ["customers", "orders"]
    assert victim.dataset("orders", version=1).to_arrow().column("id").to_pylist() == [1, 2, 3]
    assert victim.dataset("customers").to_arrow().equals(CUSTOMERS)
    assert victim.dataset("orders", version=1).versions() == [1, 2]  # the number stays taken
    assert victim.fsck().ok

    listing = run_lakelet("datasets", "--json", env={"LAKELET_HOME": str(victim.root)})
    assert listing.returncode == 0, listing.stderr.decode()
    assert [d["name"] for d in json.loads(listing.stdout)] == ["customers"]
    warning = listing.stderr.decode().strip()
    assert len(warning.splitlines()) == 1 and "'orders' version 2" in warning, warning

    # an overwrite starts afresh from no manifest: it repairs the dataset
    repaired = victim.write_dataset("orders", _orders("2025-01-22", [7]), mode="overwrite")
    assert repaired.version == 3 and repaired.to_arrow().column("id").to_pylist() == [7]


@ON_PEER_REMOTES
@pytest.mark.parametrize("how", ["up the tree", "absolute"])
def test_a_manifest_naming_a_file_outside_the_lake_writes_nothing_there(
    remote, machine, tmp_path, how
) -> None:
    """The forged file's bytes are on the remote under the key the manifest names and match
    its digest: what lakelet fetched before, it wrote beside the lake (a .pth file there
    would run in every Python started with that folder on its path)."""
    _shared(machine)
    evil = b"import os; os.system('echo owned')\n"
    # from victim/lake/datasets/orders, both land beside victim/lake
    relative = "../../../evil.pth" if how == "up the tree" else str(tmp_path / "victim" / "evil.pth")
    _peer_put(remote, f"datasets/orders/{relative}", evil)
    entry = {"relative": relative, "digest": _digest(evil), "size": len(evil), "rows": 1, "partition": {}}
    _peer_put(remote, MANIFEST_2, json.dumps(_forged(remote, files=[entry])).encode())

    victim = _victim(machine, tmp_path)
    _assert_refused(victim, tmp_path)
    assert not (tmp_path / "victim" / "evil.pth").exists()


@ON_PEER_REMOTES
@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda f: {**f, "size": -5}, id="negative size"),
        pytest.param(lambda f: {**f, "rows": 2**70}, id="huge row count"),
        pytest.param(lambda f: {**f, "partition": {"dt": 5}}, id="partition value not a string"),
        pytest.param(lambda f: {**f, "digest": "blake3:../../x"}, id="digest not hex"),
        pytest.param(
            lambda f: {**f, "relative": "dt=2025-01-20//" + f["relative"].split("/")[-1]}, id="empty segment"
        ),
        pytest.param(lambda f: {**f, "relative": f["relative"] + "\x00.txt"}, id="NUL in path"),
        pytest.param(lambda f: {**f, "relative": "_manifests/00000003.json"}, id="not a data file"),
    ],
)
def test_a_well_formed_manifest_with_a_bad_file_entry_is_refused(remote, machine, tmp_path, forge) -> None:
    _shared(machine)
    real = json.loads(_peer_get(remote, "datasets/orders/_manifests/00000001.json"))["files"]
    _peer_put(remote, MANIFEST_2, json.dumps(_forged(remote, files=[forge(real[0])])).encode())
    _assert_refused(_victim(machine, tmp_path), tmp_path)


@ON_PEER_REMOTES
@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(lambda body: b"\x00\xff{not json", id="not json"),
        pytest.param(lambda body: body[: len(body) // 2], id="truncated"),
        pytest.param(lambda body: b"[]", id="not an object"),
        pytest.param(
            lambda body: json.dumps({**json.loads(body), "files": "all of them"}).encode(), id="wrong type"
        ),
        pytest.param(lambda body: json.dumps({**json.loads(body), "schema": "zz"}).encode(), id="bad schema"),
        pytest.param(
            lambda body: json.dumps({**json.loads(body), "stats": {"id": {"count": "many"}}}).encode(),
            id="bad statistics",
        ),
        pytest.param(
            lambda body: json.dumps({**json.loads(body), "version": 7}).encode(), id="wrong version"
        ),
        pytest.param(lambda body: b"[" * 100_000, id="nested too deep"),
    ],
)
def test_a_garbage_manifest_is_refused_and_the_rest_stays_usable(remote, machine, tmp_path, garbage) -> None:
    _shared(machine)
    body = json.dumps(_forged(remote)).encode()
    _peer_put(remote, MANIFEST_2, garbage(body))
    _assert_refused(_victim(machine, tmp_path), tmp_path)


@ON_PEER_REMOTES
def test_markup_in_a_manifest_is_shown_as_text(remote, machine, tmp_path) -> None:
    """A creator, a column name or a value in the data that reads as rich markup is printed as
    it is, never interpreted ("[/red]" alone would stop the command with a traceback)."""
    a = _shared(machine)
    a.write_dataset("notes", pa.table({"[/b]": ["[/i]", "plain"]}))
    _peer_put(remote, MANIFEST_2, json.dumps(_forged(remote, creator="[/red]")).encode())
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
def test_a_refused_manifest_quoting_markup_is_one_error_line(remote, machine, tmp_path) -> None:
    _shared(machine)
    _peer_put(remote, MANIFEST_2, json.dumps(_forged(remote, mode="[/red]")).encode())
    env = {"LAKELET_HOME": str(_victim(machine, tmp_path).root)}
    info = run_lakelet("info", "datasets/orders", env=env)
    assert info.returncode == 1 and info.stdout == b""
    assert info.stderr.decode().splitlines() == [
        f"error: dataset 'orders' version 2: invalid manifest {MANIFEST_2} (on the remote): mode is not "
        "append or overwrite but '[/red]'; version 1 and older can still be read"
    ]


@ON_PEER_REMOTES
def test_statistics_that_disagree_with_their_sample_still_read(remote, machine, tmp_path) -> None:
    """A sample reaching past min and max (a well-formed lie) is clamped into the histogram."""
    _shared(machine)
    forged = _forged(remote)
    forged["stats"]["id"].update(min=1, max=3)
    forged["stats"]["id"]["sample"] = {"seen": 4, "values": [-1000.0, 2.0, 1e300, float("inf")]}
    _peer_put(remote, MANIFEST_2, json.dumps(forged).encode())
    stats = _victim(machine, tmp_path).dataset("orders").stats()["id"]
    assert stats["quantiles"]["0.5"] == 1e300 and sum(stats["histogram"]["counts"]) == 3


def test_statistics_of_a_column_holding_infinities_read_back(lake) -> None:
    lake.write_dataset("readings", pa.table({"v": [float("-inf"), 1.0, float("inf")]}))
    stats = lakelet.open(lake.root).dataset("readings").stats()["v"]
    assert (stats["min"], stats["quantiles"]["0.5"], stats["max"]) == (float("-inf"), 1.0, float("inf"))
    assert "histogram" not in stats  # no finite bins between two infinities


@ON_PEER_REMOTES
def test_a_dataset_under_an_invalid_name_is_not_listed(remote, machine, tmp_path) -> None:
    a = _shared(machine)
    body = _peer_get(remote, "datasets/customers/_manifests/00000001.json")
    _peer_put(remote, "datasets/bad\x01name/_manifests/00000001.json", body)
    assert a.datasets() == ["customers", "orders"]
    listing = run_lakelet("datasets", "--json", env={"LAKELET_HOME": str(a.root)})
    assert listing.returncode == 0, listing.stderr.decode()
    assert [d["name"] for d in json.loads(listing.stdout)] == ["customers", "orders"]


@ON_PEER_REMOTES
def test_fsck_quarantines_a_bad_local_manifest_and_the_remote_copy_is_read_again(
    remote, machine, tmp_path
) -> None:
    """A local copy that rotted (or that an older lakelet kept from a peer) is moved aside and
    reported; the remote's copy is fetched again on the next read."""
    _shared(machine)
    victim = _victim(machine, tmp_path)
    local = victim.root / "datasets" / "orders" / "_manifests" / "00000001.json"
    good = local.read_bytes()
    local.chmod(0o644)
    local.write_bytes(good[:-10])
    with pytest.raises(lakelet.CorruptRecordError, match="local copy"):
        victim.dataset("orders")

    report = victim.fsck()
    assert report.manifests_quarantined == ["datasets/orders/_manifests/00000001.json"] and not report.ok
    assert (victim.root / "quarantine" / "datasets" / "orders" / "_manifests" / "00000001.json").is_file()
    assert victim.dataset("orders").to_arrow().column("id").to_pylist() == [1, 2, 3]
    assert local.read_bytes() == good


def test_cli_fsck_reports_a_quarantined_manifest_in_one_line(lake) -> None:
    lake.write_dataset("orders", _orders("2025-01-20", [1]))
    local = lake.root / "datasets" / "orders" / "_manifests" / "00000001.json"
    local.chmod(0o644)
    local.write_bytes(b"{}")
    checked = run_lakelet("fsck", env={"LAKELET_HOME": str(lake.root)})
    assert checked.returncode == 1
    lines = checked.stderr.decode().splitlines()
    assert lines == ["invalid manifest: datasets/orders/_manifests/00000001.json (moved to quarantine/)"]
    assert lakelet.open(lake.root).datasets() == []  # its only version is gone: no dataset left


def test_a_dataset_listing_in_the_ui_skips_a_bad_manifest(lake) -> None:
    from lakelet.ui import _queries

    lake.write_dataset("orders", _orders("2025-01-20", [1]))
    lake.write_dataset("customers", CUSTOMERS)
    local = lake.root / "datasets" / "orders" / "_manifests" / "00000001.json"
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
