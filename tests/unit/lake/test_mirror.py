"""MirroredFiles: small shared files, on the remote first (the source of truth) and here."""

from __future__ import annotations

from pathlib import Path

import pytest

import lakelet
from lakelet.lake._mirror import MirroredFiles


@pytest.fixture
def two_machines(tmp_path: Path) -> tuple[lakelet.Lake, lakelet.Lake]:
    remote = (tmp_path / "remote").as_uri()
    return (lakelet.init(tmp_path / "a", remote=remote), lakelet.init(tmp_path / "b", remote=remote))


def test_a_replaced_file_is_read_from_the_remote_on_every_machine(two_machines) -> None:
    a, b = (MirroredFiles(m.context) for m in two_machines)
    a.replace("state/p/state.json", b"1")
    b.replace("state/p/state.json", b"2")
    assert a.read("state/p/state.json") == b"2"  # b's, though a holds its own copy
    assert (two_machines[0].root / "state/p/state.json").read_bytes() == b"1"


def test_create_is_once_across_machines(two_machines) -> None:
    a, b = (MirroredFiles(m.context) for m in two_machines)
    assert a.create("datasets/d/_manifests/00000001.json", b"a's", read_only=True)
    assert not b.create("datasets/d/_manifests/00000001.json", b"b's", read_only=True)
    assert not (two_machines[1].root / "datasets/d/_manifests/00000001.json").exists()  # nothing half-done
    local = two_machines[0].root / "datasets/d/_manifests/00000001.json"
    assert local.stat().st_mode & 0o222 == 0


def test_an_immutable_file_is_kept_locally_once_read(two_machines) -> None:
    a, b = (MirroredFiles(m.context) for m in two_machines)
    a.create("logs/p/1.json", b"{}")
    assert b.read_immutable("logs/p/1.json") == b"{}"
    assert (two_machines[1].root / "logs/p/1.json").read_bytes() == b"{}"
    assert b.read_immutable("logs/p/missing.json") is None


def test_keys_lists_both_sides_one_folder_deep_unless_asked(two_machines) -> None:
    a, b = (MirroredFiles(m.context) for m in two_machines)
    a.create("logs/p/1.json", b"{}")
    b.create("logs/p/2.json", b"{}")
    b.create("logs/p/sub/3.json", b"{}")
    assert a.keys("logs/p/", ".json") == ["logs/p/1.json", "logs/p/2.json"]
    everything = ["logs/p/1.json", "logs/p/2.json", "logs/p/sub/3.json"]
    assert a.keys("logs/p/", ".json", recursive=True) == everything


def test_an_embedded_lake_keeps_them_here(lake: lakelet.Lake) -> None:
    files = MirroredFiles(lake.context)
    assert files.read("state/p/state.json") is None
    files.replace("state/p/state.json", b"1")
    assert files.create("runs/r.json", b"{}") and not files.create("runs/r.json", b"{}")
    assert files.read("state/p/state.json") == b"1" and files.keys("runs/") == ["runs/r.json"]
