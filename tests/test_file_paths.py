"""A ``File`` is a path (``os.PathLike``) any tool opens, and a digest finds the content it names."""

from __future__ import annotations

import os
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest

import lakelet

from .conftest import run_lakelet

# --- File is os.PathLike ---------------------------------------------------------------------


def test_open_pandas_and_shutil_take_a_file(lake, make_file, tmp_path) -> None:
    f = lake.add(make_file("orders.csv", "id,amount\n1,9.5\n"), "raw/orders/2025-01-20.csv")
    with open(f) as fh:
        assert fh.read() == "id,amount\n1,9.5\n"
    assert pd.read_csv(f)["amount"].tolist() == [9.5]
    copied = shutil.copy(f, tmp_path / "copy.csv")
    assert Path(copied).read_text() == "id,amount\n1,9.5\n"
    assert Path(f).read_text() == "id,amount\n1,9.5\n"


def test_the_path_ends_with_the_names_suffix_for_engines_that_go_by_it(lake, tmp_path) -> None:
    pl.DataFrame({"id": [1, 2]}).write_parquet(tmp_path / "t.parquet")
    f = lake.add(tmp_path / "t.parquet", "tables/t.parquet")
    assert os.fspath(f).endswith(".parquet") and f.path == Path(os.fspath(f))
    # Polars takes str and pathlib.Path only (any other object must be a file): f.path is one
    assert pl.read_parquet(f.path)["id"].to_list() == [1, 2]
    # DuckDB picks the reader from the extension
    assert duckdb.sql(f"SELECT sum(id) FROM '{os.fspath(f)}'").fetchall() == [(3,)]
    gz = lake.add(_write(tmp_path / "a.csv.gz", b""), "raw/2025.01.20.csv.gz")
    assert os.fspath(gz).endswith(".csv.gz")
    plain = lake.add(_write(tmp_path / "plain", b"p"), "raw/README")
    assert Path(plain).name == plain.digest.split(":")[1][2:]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_the_path_is_a_read_only_view_in_the_lake(lake, make_file) -> None:
    f = lake.add(make_file("a.txt", "abc"), "docs/a.txt")
    path = Path(os.fspath(f))
    assert path.is_relative_to(lake.root / "views")
    assert stat.S_IMODE(path.stat().st_mode) & 0o222 == 0
    assert path.resolve() == lake.context.blob_path(f.record).resolve()
    same = lake.add(make_file("b.txt", "abc"), "docs/b.txt")  # same content, same suffix
    assert os.fspath(same) == os.fspath(f)


def test_the_path_is_verified_each_time_it_is_handed_out(lake, make_file) -> None:
    f = lake.add(make_file("a.txt", "precious"), "a.txt")
    path = os.fspath(f)
    blob = lake.context.blob_path(f.record)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"tampered")
    with pytest.raises(lakelet.IntegrityError):
        os.fspath(f)
    with pytest.raises(lakelet.IntegrityError):
        pd.read_csv(lake.file("a.txt"))
    assert Path(path).read_bytes() == b"tampered"  # a path handed out before stays a path


def test_fsck_and_gc_look_past_the_views(lake, make_file) -> None:
    kept = lake.add(make_file("a.txt", "kept"), "a.txt")
    lakelet.use(lake)

    @lakelet.stage(ttl="1h", format="text")
    def scratch():
        return "expires"

    scratch()
    (output,) = [f for f in lake.ls("stages/") if f.kind == "stage output"]
    views = [Path(os.fspath(kept)), Path(os.fspath(output))]
    report = lake.fsck()
    assert report.ok and report.objects_checked == 3  # a.txt, the output, its run record
    assert all(v.exists() for v in views)

    report = lake.gc(now=datetime.now(UTC) + timedelta(days=2))
    assert report.stage_outputs == [output.name] and output.digest in report.objects
    assert views[0].read_text() == "kept"  # a view keeps no object alive, nor loses one
    assert views[1].is_symlink() and not views[1].exists()  # the bytes are gone: it dangles
    assert lake.fsck().ok and lake.fsck().objects_checked == 2


@pytest.mark.parametrize("remote", ["file"], indirect=True)
def test_the_path_of_a_name_never_fetched_is_fetched_and_verified(machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    a.add(make_file("a.csv", "id\n1\n"), "raw/a.csv")
    f = b.file("raw/a.csv")
    assert not f.is_local
    view = Path(os.fspath(f))  # fetched, verified
    assert f.is_local and pd.read_csv(view)["id"].tolist() == [1]
    b.evict()
    assert not f.is_local and not view.exists()  # the view dangles until it is handed out again
    assert pd.read_csv(f)["id"].tolist() == [1] and view.exists()


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
