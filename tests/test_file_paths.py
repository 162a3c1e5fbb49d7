"""A ``File`` is a path (``os.PathLike``) any tool opens, and a digest finds the content it names."""

from __future__ import annotations

import pytest

import lakelet

from .conftest import run_lakelet

# --- content by digest -----------------------------------------------------------------------


def test_a_digest_opens_the_content_whatever_it_is_named(lake, make_file) -> None:
    first = lake.add(make_file("a.txt", "shared bytes"), "first.txt")
    lake.add(make_file("b.txt", "shared bytes"), "again/second.txt")
    f = lake.file(first.digest)
    assert f.name == "first.txt" and f.read_text() == "shared bytes" and f.digest == first.digest
    lake.rm("first.txt", force=True)
    assert lake.file(first.digest).name == "again/second.txt"
    lake.add(make_file("c.txt", "c"), "blake3:cafe")  # too short for a digest: a name
    assert lake.file("blake3:cafe").read_text() == "c"


def test_a_digest_no_name_holds_is_not_found_naming_it(lake, make_file) -> None:
    digest = "blake3:" + "ab" * 32
    with pytest.raises(lakelet.NotFoundError, match=digest) as error:
        lake.file(digest)
    assert error.value.name == digest
    removed = lake.add(make_file("a.txt", "a"), "a.txt")
    lake.rm("a.txt", force=True)
    with pytest.raises(lakelet.NotFoundError, match=removed.digest):
        lake.file(removed.digest)


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_a_digest_bound_on_another_machine_is_found_there(machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    f = a.add(make_file("a.txt", "from a"), "raw/a.txt")
    assert b.file(f.digest).read_text() == "from a"


def test_lakelet_cat_takes_a_digest(tmp_path, make_file) -> None:
    lake = lakelet.init(tmp_path / "home")
    f = lake.add(make_file("a.txt", "by digest"), "a.txt")
    out = run_lakelet("cat", f.digest, env={"LAKELET_HOME": str(lake.root)})
    assert out.returncode == 0 and out.stdout == b"by digest"
