"""``lake.url`` / ``lakelet url`` for scoped names and content digests, and
``File("blake3:<hex>")`` on the current lake."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

import lakelet

from .conftest import run_lakelet


def _read(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:  # file:// and presigned http alike
        data: bytes = response.read()
    return data


@pytest.mark.parametrize("remote", ["file", "s3"], indirect=True)
def test_urls_of_scoped_names_and_digests(machine) -> None:
    lake = machine("a")
    lake.user.puts("scratch/note.txt", b"mine")
    lake.pipeline("run-1").puts("part-0.csv", b"a\n1\n")
    f = lake.add(b"shared", "raw/s.txt")
    assert _read(lake.url("scratch/note.txt", scope="user")) == b"mine"
    assert _read(lake.url("part-0.csv", scope="pipeline/run-1")) == b"a\n1\n"
    assert _read(lake.url(f.digest)) == b"shared"
    with pytest.raises(lakelet.NotFoundError):
        lake.url("absent.txt", scope="user")


def test_cli_url_takes_a_scope(lake: lakelet.Lake) -> None:
    lake.user.puts("note.txt", b"n")
    env = {"LAKELET_HOME": str(lake.root)}
    out = run_lakelet("url", "--scope", "user", "note.txt", env=env)
    assert out.returncode == 0, out.stderr
    assert _read(out.stdout.decode().strip()) == b"n"
    bad = run_lakelet("url", "--scope", "nope", "note.txt", env=env)
    assert bad.returncode == 1 and bad.stderr.decode().startswith("error:")


def test_file_by_digest_on_the_current_lake(lake: lakelet.Lake) -> None:
    added = lake.add(b"a,b\n1,2\n", "raw/t.csv")
    with lakelet.use(lake):
        f = lakelet.File(added.digest)
        assert f.name == "raw/t.csv"
        assert Path(f).read_bytes() == b"a,b\n1,2\n" and os_suffix(f) == ".csv"
        assert f == added
        with pytest.raises(lakelet.NotFoundError, match="blake3:"):
            lakelet.File("blake3:" + "0" * 64).record  # noqa: B018


def os_suffix(f: lakelet.File) -> str:
    return Path(f).suffix
