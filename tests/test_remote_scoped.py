"""Scoped stores on a remote: every machine sees the same user and pipeline stores."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import fsspec
import pytest

import lakelet


def _fs(remote):
    fs, root = fsspec.core.url_to_fs(remote.url, **remote.storage_options)
    return fs, root.rstrip("/")


def test_pipeline_store_is_shared_through_the_remote(remote, machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    run_a = a.pipeline("run-1")
    run_a.puts("parts/0.csv", b"id\n0\n")
    run_a.put("parts/1.csv", make_file("p1.csv", "id\n1\n"))
    run_a.puts("summary.json", b'{"rows": 2}')

    run_b = b.pipeline("run-1")
    assert run_b.list() == ["parts/0.csv", "parts/1.csv", "summary.json"]
    assert run_b.list("parts/") == ["parts/0.csv", "parts/1.csv"]
    assert run_b.list("parts/0") == ["parts/0.csv"]
    assert run_b.gets("parts/1.csv") == b"id\n1\n"
    assert run_b.size("summary.json") == 11 and run_b.exists("summary.json")
    assert [f.name for f in b.ls("parts/", scope="pipeline/run-1")] == ["parts/0.csv", "parts/1.csv"]

    run_b.puts("summary.json", b'{"rows": 3}')  # scoped names may be overwritten, from anywhere
    assert run_a.gets("summary.json") == b'{"rows": 3}'  # a's cached copy is not served stale

    fs, root = _fs(remote)
    assert fs.cat_file(f"{root}/scopes/pipeline/run-1/files/parts/0.csv") == b"id\n0\n"  # plain files

    run_b.delete("parts", recursive=True)
    assert run_a.list() == ["summary.json"]
    run_a.archive()
    assert run_b.list() == []
    assert not fs.exists(f"{root}/scopes/pipeline/run-1")


def test_byte_range_reads_only_the_range(remote, machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    a.user.put("big.bin", make_file("big.bin", bytes(range(256)) * 4096))  # 1 MiB
    assert b.user.gets("big.bin", byte_range=[1000, 1010]) == (bytes(range(256)) * 4096)[1000:1010]
    cached = [p for p in (b.root / "scopes").rglob("*") if p.is_file() and p.parent.name != "names"]
    assert not any(p.stat().st_size == 1 << 20 for p in cached), "a range must not fetch the whole file"
    assert b.user.gets("big.bin", byte_range=[5, 5]) == b""
    assert len(b.user.gets("big.bin")) == 1 << 20


def test_users_never_see_each_other(remote, machine, monkeypatch) -> None:
    a, b = machine("a"), machine("b")
    a.user.puts("notes.txt", b"tester's")
    monkeypatch.setenv("LAKELET_USER", "someone-else@example.com")
    assert b.user.list() == [] and not b.user.exists("notes.txt")
    b.user.puts("notes.txt", b"someone's")
    monkeypatch.setenv("LAKELET_USER", "tester@example.com")
    assert a.user.gets("notes.txt") == b"tester's"
    fs, root = _fs(remote)
    users = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{root}/scopes/user", detail=False))
    assert users == ["someone-else@example.com", "tester@example.com"]  # one prefix per user


def test_tampered_remote_scoped_file_is_never_served(remote, machine) -> None:
    a, b = machine("a"), machine("b")
    a.user.puts("x.txt", b"the real bytes")
    fs, root = _fs(remote)
    fs.pipe_file(f"{root}/scopes/user/tester@example.com/files/x.txt", b"forged bytes!!")
    with pytest.raises(lakelet.IntegrityError, match="does not match"):
        b.user.gets("x.txt")
    assert not any(p.is_file() for p in (b.root / "scopes").rglob("blobs/**/*"))


def test_scoped_url_is_readable(remote, machine) -> None:
    a = machine("a")
    a.pipeline("r").puts("out.txt", b"result")
    if remote.kind == "gcs":  # signing needs a service account key; the emulator runs anonymous
        with pytest.raises(lakelet.RemoteError, match="private key"):
            a.pipeline("r").url("out.txt")
        return
    url = a.pipeline("r").url("out.txt")
    if remote.kind == "file":
        assert Path(url.removeprefix("file://")).read_bytes() == b"result"
    else:
        assert urllib.request.urlopen(url, timeout=10).read() == b"result"
