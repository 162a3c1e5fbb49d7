"""``lake.add`` from memory (bytes, a binary file object, an iterable of bytes) and user metadata
(``meta=``): streamed, verified, write-once, and nothing bound when anything is wrong."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import lakelet

from .conftest import run_lakelet, snapshot


def test_bytes_file_objects_and_iterators_are_added(lake: lakelet.Lake, tmp_path: Path) -> None:
    by_bytes = lake.add(b"a,b\n1,2\n", "raw/bytes.csv")
    by_buffer = lake.add(io.BytesIO(b"x" * 5_000_000), "raw/buffer.bin")
    by_chunks = lake.add((bytes([i]) * 1000 for i in range(200)), "raw/chunks.bin")
    (tmp_path / "on-disk.bin").write_bytes(b"0123456789")
    with open(tmp_path / "on-disk.bin", "rb") as fh:
        fh.read(4)  # read from where the caller stands, as shutil.copyfileobj does
        by_open_file = lake.add(fh, "raw/open.bin")
        assert not fh.closed  # the caller's file stays the caller's
    assert isinstance(by_bytes, lakelet.File)
    assert Path(by_bytes).read_bytes() == b"a,b\n1,2\n"
    assert by_buffer.size == 5_000_000
    assert Path(by_chunks).read_bytes() == b"".join(bytes([i]) * 1000 for i in range(200))
    assert Path(by_open_file).read_bytes() == b"456789"
    assert by_bytes.meta["source"] == "<bytes>"
    assert lake.add(b"a,b\n1,2\n", "raw/bytes.csv") == by_bytes  # the same content again: a no-op
    with pytest.raises(lakelet.NameExistsError):
        lake.add(b"other", "raw/bytes.csv")


def _failing() -> Iterator[bytes]:
    yield b"first chunk"
    raise ConnectionResetError("the producer died")


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (io.StringIO("text"), lakelet.InvalidArgumentError),  # a text stream: say 'rb'
        (["a", "b"], lakelet.InvalidArgumentError),  # an iterable of str
        (12, lakelet.InvalidArgumentError),
        (_failing(), lakelet.StorageError),  # an OSError of the producer, mid-stream
    ],
)
def test_bad_data_binds_nothing(lake: lakelet.Lake, data: object, error: type[Exception]) -> None:
    before = snapshot(lake.root)
    with pytest.raises(error):
        lake.add(data, "raw/x.bin")  # type: ignore[arg-type]
    assert not lake.exists("raw/x.bin")
    assert snapshot(lake.root) == before


def test_a_stream_cannot_be_moved(lake: lakelet.Lake) -> None:
    with pytest.raises(lakelet.InvalidArgumentError, match="move"):
        lake.add(b"x", "x.bin", move=True)


def test_user_meta_is_kept_beside_lakelets_own(lake: lakelet.Lake, make_file) -> None:
    f = lake.add(make_file("a.csv", "a\n1\n"), "raw/a.csv", meta={"config_id": "c1", "tags": ("x", 2)})
    assert f.meta["config_id"] == "c1"
    assert f.meta["tags"] == ["x", 2]
    assert f.meta["source"].endswith("a.csv")  # lakelet's lineage keys are still there
    assert lake.file("raw/a.csv").meta["config_id"] == "c1"  # read back from the index
    listed = {g.name: g.meta for g in lake.ls("raw/")}
    assert listed["raw/a.csv"]["config_id"] == "c1"


@pytest.mark.parametrize(
    "meta",
    [
        {"stage": "mine"},  # would pass the file off as a stage output
        {"source": "elsewhere"},
        {"x": float("nan")},
        {"x": object()},
        {1: "int key"},
        "not a dict",
        {"x": "y" * 70_000},
    ],
)
def test_bad_meta_binds_nothing(lake: lakelet.Lake, meta: object) -> None:
    before = snapshot(lake.root)
    with pytest.raises(lakelet.InvalidArgumentError):
        lake.add(b"data", "raw/x.bin", meta=meta)  # type: ignore[arg-type]
    assert not lake.exists("raw/x.bin")
    assert snapshot(lake.root) == before


@pytest.mark.parametrize("remote", ["file", "s3"], indirect=True)
def test_meta_and_memory_adds_reach_other_machines(machine) -> None:
    a, b = machine("a"), machine("b")
    a.add(io.BytesIO(b"payload"), "raw/p.bin", meta={"artemis_id": "job-7"})
    b.sync()
    f = b.file("raw/p.bin")
    assert f.meta["artemis_id"] == "job-7"
    assert Path(f).read_bytes() == b"payload"  # fetched lazily, verified


def test_cli_add_reads_stdin_and_shows_meta(lake: lakelet.Lake, tmp_path: Path) -> None:
    env = {"LAKELET_HOME": str(lake.root)}
    added = run_lakelet("add", "-", "raw/in.txt", "--meta", '{"run_id": "r1"}', env=env, input=b"from a pipe")
    assert added.returncode == 0, added.stderr
    assert lakelet.open(lake.root).file("raw/in.txt").meta["run_id"] == "r1"
    info = run_lakelet("info", "raw/in.txt", "--json", env=env)
    assert json.loads(info.stdout)["meta"]["run_id"] == "r1"
    listed = run_lakelet("ls", "--json", env=env)
    assert json.loads(listed.stdout)[0]["meta"]["run_id"] == "r1"
    bad = run_lakelet("add", "-", "raw/bad.txt", "--meta", '{"stage": "x"}', env=env, input=b"x")
    assert bad.returncode == 1
    assert bad.stderr.decode().startswith("error:") and "reserved" in bad.stderr.decode()
    assert len(bad.stderr.decode().strip().splitlines()) == 1
