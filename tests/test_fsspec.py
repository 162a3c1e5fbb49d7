"""``lakelet://``: the lake as an fsspec filesystem, as pandas, Polars, pyarrow and DuckDB use it.

fsspec's own conformance suite (``fsspec.tests.abstract``) runs twice: whole on a
user scope (mutable, like any filesystem), and on the write-once lake scope less
the tests that remove or overwrite what they wrote between their steps.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from pathlib import Path

import duckdb
import fsspec
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from fsspec.tests import abstract

import lakelet
from lakelet.fs import LakeFileSystem

from .conftest import REPO, snapshot


@pytest.fixture(autouse=True)
def _no_cached_filesystems():
    """fsspec keeps one instance per set of options: each test opens its own lakes."""
    yield
    LakeFileSystem.clear_instance_cache()


@pytest.fixture
def fs(lake: lakelet.Lake) -> LakeFileSystem:
    return fsspec.filesystem("lakelet", lake=str(lake.root))


def _options(lake: lakelet.Lake) -> dict[str, str]:
    return {"lake": str(lake.root)}


# --- fsspec's conformance suite ------------------------------------------------------------


class _LakeFixtures(abstract.AbstractFixtures):
    scope = "lake"

    @pytest.fixture
    def fs(self, tmp_path: Path) -> LakeFileSystem:
        lakelet.init(tmp_path / "lake")
        return LakeFileSystem(lake=tmp_path / "lake", scope=self.scope)

    @pytest.fixture
    def fs_path(self) -> str:
        return "root"

    @pytest.fixture
    def fs_join(self):
        return lambda *parts: "/".join(parts)

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False  # a directory is the names under it


class _UserScopeFixtures(_LakeFixtures):
    scope = "user"


class _WriteOnceFixtures(_LakeFixtures):
    """The lake scope: fsspec's scenarios without the clean-up that removes them (each test has
    a lake of its own)."""

    @pytest.fixture
    def fs_bulk_operations_scenario_0(self, fs, fs_join, fs_path):
        return self._bulk_operations_scenario_0(fs, fs_join, fs_path)

    @pytest.fixture
    def fs_glob_edge_cases_files(self, fs, fs_join, fs_path):
        return self._glob_edge_cases_files(fs, fs_join, fs_path)

    @pytest.fixture
    def fs_dir_and_file_with_same_name_prefix(self, fs, fs_join, fs_path):
        return self._dir_and_file_with_same_name_prefix(fs, fs_join, fs_path)

    @pytest.fixture
    def fs_10_files_with_hashed_names(self, fs, fs_join, fs_path):
        return self._10_files_with_hashed_names(fs, fs_join, fs_path)

    @pytest.fixture
    def fs_target(self, fs_join, fs_path):
        return fs_join(fs_path, "target")


class TestUserScopeCopy(abstract.AbstractCopyTests, _UserScopeFixtures):
    pass


class TestUserScopeGet(abstract.AbstractGetTests, _UserScopeFixtures):
    pass


class TestUserScopePut(abstract.AbstractPutTests, _UserScopeFixtures):
    pass


class TestUserScopeOpen(abstract.AbstractOpenTests, _UserScopeFixtures):
    pass


class TestUserScopePipe(abstract.AbstractPipeTests, _UserScopeFixtures):
    pass


class TestLakeGet(abstract.AbstractGetTests, _WriteOnceFixtures):
    pass


class TestLakeOpen(abstract.AbstractOpenTests, _WriteOnceFixtures):
    pass


class TestLakeCopy(abstract.AbstractCopyTests, _WriteOnceFixtures):
    # These rm what they copied between their steps (PermissionError on lake names); the
    # user scope runs them.
    test_copy_file_to_existing_directory = None
    test_copy_directory_to_existing_directory = None
    test_copy_directory_to_new_directory = None
    test_copy_glob_to_existing_directory = None
    test_copy_glob_to_new_directory = None
    test_copy_glob_edge_cases = None
    test_copy_list_of_files_to_existing_directory = None
    test_copy_directory_without_files_with_same_name_prefix = None


class TestLakePut(abstract.AbstractPutTests, _WriteOnceFixtures):
    # As for copies: these rm what they put between their steps.
    test_put_file_to_existing_directory = None
    test_put_directory_to_existing_directory = None
    test_put_directory_to_new_directory = None
    test_put_glob_to_existing_directory = None
    test_put_glob_to_new_directory = None
    test_put_glob_edge_cases = None
    test_put_list_of_files_to_existing_directory = None
    test_put_directory_recursive = None
    test_put_directory_without_files_with_same_name_prefix = None


# AbstractPipeTests has one test, which overwrites a name with other bytes: the user scope runs
# it; test_a_bound_name_takes_the_same_bytes_again_and_refuses_others is the lake scope's.


# --- finding the filesystem ------------------------------------------------------------------


def test_the_fsspec_entry_point_names_the_filesystem() -> None:
    """fsspec reads ``fsspec.specs`` entry points when it is imported (after `pip install`)."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    module, _, name = declared["fsspec.specs"]["lakelet"].partition(":")
    assert getattr(importlib.import_module(module), name) is LakeFileSystem
    assert LakeFileSystem.protocol == "lakelet"


def test_importing_lakelet_fs_registers_the_protocol(lake) -> None:
    assert fsspec.get_filesystem_class("lakelet") is LakeFileSystem
    fs = fsspec.filesystem("lakelet", lake=str(lake.root))
    assert isinstance(fs, LakeFileSystem) and fs.lake.root == lake.root


def test_pandas_reads_and_writes_a_name_of_a_lake_given_by_path(lake, make_file) -> None:
    lake.add(make_file("a.csv", "x,y\n1,2\n3,4\n"), "raw/a.csv")
    df = pd.read_csv("lakelet://raw/a.csv", storage_options=_options(lake))
    assert df.to_dict("list") == {"x": [1, 3], "y": [2, 4]}
    (df * 10).to_csv("lakelet://derived/a.csv", index=False, storage_options=_options(lake))
    assert lake.file("derived/a.csv").read_text() == "x,y\n10,20\n30,40\n"


def test_without_options_the_current_lake_is_used_at_each_call(tmp_path, make_file, monkeypatch) -> None:
    first, second = lakelet.init(tmp_path / "first"), lakelet.init(tmp_path / "second")
    first.add(make_file("one.txt", "in the first"), "n.txt")
    second.add(make_file("two.txt", "in the second"), "n.txt")
    monkeypatch.setenv("LAKELET_HOME", str(first.root))
    fs = fsspec.filesystem("lakelet")
    assert fs.cat("lakelet://n.txt") == b"in the first"
    monkeypatch.setenv("LAKELET_HOME", str(second.root))
    assert fsspec.filesystem("lakelet") is fs and fs.cat("n.txt") == b"in the second"
    with lakelet.use(first):
        assert pd.read_csv("lakelet://n.txt", header=None)[0][0] == "in the first"


def test_bad_options_and_paths_get_one_clear_error(lake, tmp_path) -> None:
    with pytest.raises(lakelet.LakeNotFoundError):
        fsspec.filesystem("lakelet", lake=str(tmp_path / "no-lake-here"))
    with pytest.raises(lakelet.InvalidNameError, match="scope"):
        fsspec.filesystem("lakelet", lake=str(lake.root), scope="team/x")
    with pytest.raises(lakelet.InvalidArgumentError, match="laek"):
        fsspec.filesystem("lakelet", laek=str(lake.root))
    fs = fsspec.filesystem("lakelet", lake=str(lake.root))
    with pytest.raises(lakelet.InvalidNameError, match=r"'\.\.'"):
        fs.cat("lakelet://raw/../etc/passwd")
    with pytest.raises(lakelet.InvalidNameError):
        fs.open("lakelet://a//b", "wb")
    with pytest.raises(lakelet.InvalidArgumentError, match="'ab'"):
        fs.open("lakelet://a", "ab")
    assert not any((lake.root / "tmp").iterdir())


# --- reading ---------------------------------------------------------------------------------


@pytest.fixture
def tree(lake, make_file) -> lakelet.Lake:
    make_file("t/a.csv", "a\n1\n")
    make_file("t/b/c.csv", "c\n3\n")
    make_file("t/b/d/e.txt", "e")
    lake.add(make_file("t/top.txt", "top").parent, "raw")
    lake.add(make_file("other.txt", "other"), "rawer.txt")
    return lake


def test_directories_are_the_prefixes_of_names(tree, fs) -> None:
    assert fs.ls("", detail=False) == ["raw", "rawer.txt"]
    assert fs.ls("lakelet://raw", detail=False) == ["raw/a.csv", "raw/b", "raw/top.txt"]
    entries = {e["name"]: e for e in fs.ls("raw/")}
    assert entries["raw/b"] == {"name": "raw/b", "size": 0, "type": "directory"}
    a = entries["raw/a.csv"]
    assert a["type"] == "file" and a["size"] == 4 and a["digest"] == tree.file("raw/a.csv").digest
    assert fs.info("raw/b")["type"] == "directory" and fs.isdir("raw") and not fs.isdir("raw/a.csv")
    assert fs.info("raw/a.csv") == a and fs.isfile("raw/a.csv")
    assert fs.ls("raw/a.csv", detail=False) == ["raw/a.csv"]
    assert fs.modified("raw/a.csv") == tree.file("raw/a.csv").created_at


def test_find_and_glob_walk_names_as_fsspec_walks_folders(tree, fs) -> None:
    assert fs.find("raw") == ["raw/a.csv", "raw/b/c.csv", "raw/b/d/e.txt", "raw/top.txt"]
    assert fs.find("raw", maxdepth=1) == ["raw/a.csv", "raw/top.txt"]
    assert fs.find("raw", withdirs=True, maxdepth=2) == [
        "raw",
        "raw/a.csv",
        "raw/b",
        "raw/b/c.csv",
        "raw/b/d",
        "raw/top.txt",
    ]
    assert fs.glob("lakelet://raw/**/*.csv") == ["raw/a.csv", "raw/b/c.csv"]
    assert fs.glob("raw/*") == ["raw/a.csv", "raw/b", "raw/top.txt"]
    assert fs.glob("raw*") == ["raw", "rawer.txt"]
    assert fs.find("rawer.txt") == ["rawer.txt"]
    assert fs.du("raw") == 4 + 4 + 1 + 3


def test_a_missing_name_is_file_not_found(tree, fs) -> None:
    for call in (fs.info, fs.ls, fs.cat, fs.open, fs.modified):
        with pytest.raises(FileNotFoundError):
            call("raw/nope.csv")
    with pytest.raises(FileNotFoundError):
        pd.read_csv("lakelet://raw/nope.csv", storage_options=_options(tree))
    assert not fs.exists("raw/nope.csv") and fs.find("raw/nope") == [] and fs.glob("nope/*") == []


def test_cat_get_and_ranges(tree, fs, tmp_path) -> None:
    assert fs.cat("raw/a.csv") == b"a\n1\n"
    assert fs.cat_file("raw/a.csv", start=2) == b"1\n" and fs.cat_file("raw/a.csv", -2, None) == b"1\n"
    assert fs.cat_file("raw/a.csv", 0, -1) == b"a\n1" and fs.read_block("raw/a.csv", 1, 2) == b"\n1"
    assert fs.head("raw/a.csv", 1) == b"a" and fs.tail("raw/a.csv", 2) == b"1\n"
    assert fs.cat("raw/b", recursive=True, on_error="omit") == {
        "raw/b/c.csv": b"c\n3\n",
        "raw/b/d/e.txt": b"e",
    }
    fs.get("lakelet://raw/", str(tmp_path / "out"), recursive=True)
    got = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.*"))
    assert got == ["a.csv", "b/c.csv", "b/d/e.txt", "top.txt"]
    assert (tmp_path / "out" / "b" / "c.csv").read_text() == "c\n3\n"


def test_a_name_can_be_read_by_its_digest(tree, fs) -> None:
    digest = tree.file("raw/b/c.csv").digest
    assert fs.cat(f"lakelet://{digest}") == b"c\n3\n"
    assert pd.read_csv(f"lakelet://{digest}", storage_options=_options(tree))["c"][0] == 3


def test_reads_are_verified_against_the_digest(lake, fs, make_file) -> None:
    f = lake.add(make_file("a.txt", "precious"), "a.txt")
    blob = lake.context.blob_path(f.record)
    os.chmod(blob, 0o644)
    blob.write_bytes(b"tampered")
    with pytest.raises(lakelet.IntegrityError):
        fs.cat("a.txt")
    with pytest.raises(lakelet.IntegrityError):
        pd.read_csv("lakelet://a.txt", storage_options=_options(lake))


def test_an_opened_name_hands_out_its_bytes_as_views_where_it_stands(lake, fs) -> None:
    # pyarrow reads an fsspec file through read_buffer when it has one (no copy, no lock)
    lake.add(bytes(range(256)) * 4, "blob.bin")
    with fs.open("blob.bin", "rb") as f:
        assert bytes(f.read_buffer(3)) == b"\x00\x01\x02" and f.tell() == 3
        assert f.read(2) == b"\x03\x04"
        f.seek(1020)
        assert bytes(f.read_buffer(100)) == bytes([252, 253, 254, 255]) and f.tell() == 1024
        assert bytes(f.read_buffer()) == b"" and bytes(f.read_buffer(5)) == b""
        f.seek(0)
        held = f.read_buffer()
    assert bytes(held[-2:]) == b"\xfe\xff"  # closing while a view is held: the view stays good
    with pa.PythonFile(fs.open("blob.bin", "rb"), mode="r") as f:
        assert f.read_buffer(4).to_pybytes() == b"\x00\x01\x02\x03"
    lake.add(b"", "empty.bin")
    with fs.open("empty.bin", "rb") as f:
        assert bytes(f.read_buffer()) == b""


# --- other engines ---------------------------------------------------------------------------


@pytest.fixture
def tables(lake, tmp_path) -> lakelet.Lake:
    for day, rows in (("2025-01-20", [1, 2]), ("2025-01-21", [3])):
        path = tmp_path / f"{day}.parquet"
        pq.write_table(pa.table({"id": rows, "day": [day] * len(rows)}), path)
        lake.add(path, f"sales/dt={day}/part.parquet")
    (tmp_path / "a.csv").write_text("id,name\n1,ann\n2,bob\n")
    lake.add(tmp_path / "a.csv", "raw/a.csv")
    return lake


def test_polars_reads_through_an_fsspec_file(tables, fs) -> None:
    with fs.open("lakelet://raw/a.csv", "rb") as f:
        assert pl.read_csv(f)["name"].to_list() == ["ann", "bob"]
    with fsspec.open("lakelet://sales/dt=2025-01-20/part.parquet", "rb", **_options(tables)) as f:
        assert pl.read_parquet(f)["id"].to_list() == [1, 2]


def test_pyarrow_reads_files_and_a_partitioned_folder(tables, fs) -> None:
    table = pq.read_table("sales/dt=2025-01-21/part.parquet", filesystem=fs)
    assert table.column("id").to_pylist() == [3]
    dataset = pads.dataset("sales", filesystem=fs, format="parquet", partitioning="hive")
    assert sorted(dataset.to_table().column("id").to_pylist()) == [1, 2, 3]


def test_duckdb_reads_lakelet_urls_through_a_registered_filesystem(tables, fs) -> None:
    con = duckdb.connect()
    con.register_filesystem(fs)
    assert con.sql("SELECT name FROM read_csv('lakelet://raw/a.csv') ORDER BY id").fetchall() == [
        ("ann",),
        ("bob",),
    ]
    rows = con.sql("SELECT sum(id) FROM read_parquet('lakelet://sales/*/*.parquet')").fetchall()
    assert rows == [(6,)]


# --- writing: write-once, bound on close -----------------------------------------------------


def test_a_bound_name_takes_the_same_bytes_again_and_refuses_others(lake, fs) -> None:
    fs.pipe("lakelet://out/a.txt", b"first")
    assert lake.file("out/a.txt").read_bytes() == b"first"
    fs.pipe("out/a.txt", b"first")  # the same content: nothing to do
    with pytest.raises(FileExistsError, match="write-once"):
        fs.pipe("out/a.txt", b"other")
    with pytest.raises(FileExistsError):
        fs.pipe_file("out/a.txt", b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.open("out/a.txt", "xb")
    with pytest.raises(FileExistsError), fs.open("out/a.txt", "w") as f:
        f.write("changed")
    assert lake.file("out/a.txt").read_bytes() == b"first"
    assert [f.name for f in lake.ls()] == ["out/a.txt"] and not any((lake.root / "tmp").iterdir())


def _fails_while_writing(open_file, data: str | bytes) -> None:
    with pytest.raises(RuntimeError, match="half-way"), open_file() as f:
        f.write(data)
        raise RuntimeError("half-way")


def test_nothing_is_bound_when_writing_fails(lake, fs) -> None:
    before = snapshot(lake.root)
    _fails_while_writing(lambda: fs.open("a.bin", "wb"), b"half")
    _fails_while_writing(lambda: fs.open("a.txt", "w"), "half")  # fsspec's text wrapper closes it
    _fails_while_writing(lambda: fs.open("a.txt.gz", "wb", compression="gzip"), b"half")
    _fails_while_writing(lambda: fsspec.open("lakelet://a.csv", "wt", **_options(lake)), "half")
    with pytest.raises(RuntimeError), fs.transaction:
        fs.pipe("in-transaction.txt", b"data")
        raise RuntimeError("the transaction is discarded")

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("half-way")

    rows = pd.DataFrame({"a": ["written", Unprintable()]})  # pandas writes a chunk, then fails
    with pytest.raises(RuntimeError, match="half-way"):
        rows.to_csv("lakelet://a.csv", chunksize=1, storage_options=_options(lake))
    f = fs.open("dropped.txt", "wb")
    f.write(b"never closed")
    del f  # dropped without a close: bound by nothing
    assert snapshot(lake.root) == before and lake.ls() == []
    assert not any((lake.root / "tmp").iterdir())


def test_closing_inside_an_except_block_of_the_caller_still_binds(lake, fs) -> None:
    try:
        raise KeyError("handled before the file was opened")
    except KeyError:
        with fs.open("fallback.txt", "wb") as f:
            f.write(b"fallback")
    assert lake.file("fallback.txt").read_bytes() == b"fallback"


def test_a_transaction_binds_its_files_when_it_ends(lake, fs) -> None:
    with fs.transaction:
        fs.pipe("t/1.txt", b"one")
        fs.pipe("t/2.txt", b"two")
        assert not lake.exists("t/1.txt")
    assert [f.read_bytes() for f in lake.ls("t/")] == [b"one", b"two"]


def test_put_adds_like_lake_add_and_records_the_source(lake, fs, make_file) -> None:
    src = make_file("orders/2025-01-20.csv", "id\n1\n")
    make_file("orders/2025-01-21.csv", "id\n2\n")
    fs.put(str(src), "lakelet://raw/orders/2025-01-20.csv")
    assert lake.file("raw/orders/2025-01-20.csv").lineage()["source"] == str(src)
    fs.put(str(src.parent) + "/", "lakelet://raw/orders/", recursive=True)
    assert fs.find("raw/orders") == ["raw/orders/2025-01-20.csv", "raw/orders/2025-01-21.csv"]
    with pytest.raises(FileExistsError):
        fs.put(str(make_file("other.csv", "id\n9\n")), "raw/orders/2025-01-21.csv")
    assert fs.cat("raw/orders/2025-01-21.csv") == b"id\n2\n"


def test_lake_names_cannot_be_removed_or_moved(tree, fs) -> None:
    before = snapshot(tree.root)
    for remove in (
        lambda: fs.rm("raw/a.csv"),
        lambda: fs.rm("raw", recursive=True),
        lambda: fs.rm_file("rawer.txt"),
        lambda: fs.mv("raw/a.csv", "moved.csv"),
    ):
        with pytest.raises(PermissionError, match="write-once"):
            remove()
    assert snapshot(tree.root) == before
    fs.copy("raw/a.csv", "copied.csv")
    assert fs.cat("copied.csv") == fs.cat("raw/a.csv")


def test_writing_inside_a_stage_binds_with_its_outputs(lake) -> None:
    lakelet.use(lake)

    @lakelet.stage(format="text")
    def report(fail: bool):
        pd.DataFrame({"a": [1]}).to_csv("lakelet://side/report.csv", index=False)
        assert not lake.exists("side/report.csv")  # bound when the stage returns
        if fail:
            raise ValueError("the stage fails")
        return "done"

    with pytest.raises(ValueError):
        report(True)
    assert not lake.exists("side/report.csv")
    report(False)
    assert lake.file("side/report.csv").read_text() == "a\n1\n"
    assert lake.file("side/report.csv").kind == "stage output"


# --- scopes ----------------------------------------------------------------------------------


def test_scopes_are_chosen_by_the_scope_option(lake, monkeypatch) -> None:
    mine = fsspec.filesystem("lakelet", lake=str(lake.root), scope="user")
    mine.pipe("notes.txt", b"v1")
    mine.pipe("notes.txt", b"v2")  # scratch space: names may be overwritten
    assert lake.user.gets("notes.txt") == b"v2"
    assert pd.read_csv(
        "lakelet://notes.txt", header=None, storage_options={**_options(lake), "scope": "user"}
    )[0].tolist() == ["v2"]
    run = fsspec.filesystem("lakelet", lake=str(lake.root), scope="pipeline/run-42")
    run.pipe("stage/out.bin", b"x")
    assert lake.pipeline("run-42").list() == ["stage/out.bin"] and run.ls("", detail=False) == ["stage"]
    run.rm("stage", recursive=True)
    assert lake.pipeline("run-42").list() == [] and not run.exists("stage/out.bin")
    theirs = fsspec.filesystem("lakelet", lake=str(lake.root), scope="user/tester@example.com")
    assert theirs.cat("notes.txt") == b"v2"
    assert lake.ls() == [] and not fsspec.filesystem("lakelet", lake=str(lake.root)).exists("notes.txt")


# --- a lake with a remote --------------------------------------------------------------------


@pytest.mark.parametrize("remote", ["file", "s3"], indirect=True)
def test_a_second_machine_reads_a_name_it_never_fetched(remote, machine, make_file) -> None:
    a, b = machine("a"), machine("b")
    a.add(make_file("a.csv", "id\n7\n"), "raw/a.csv")
    options = {"lake": str(b.root)}
    assert pd.read_csv("lakelet://raw/a.csv", storage_options=options)["id"].tolist() == [7]
    assert b.file("raw/a.csv").is_local  # fetched on first read, verified, kept

    bad = a.add(make_file("b.bin", b"good bytes"), "raw/b.bin")
    remote_fs, root = fsspec.core.url_to_fs(remote.url, **remote.storage_options)
    algo, hexdigest = bad.digest.split(":")
    remote_fs.pipe_file(f"{root.rstrip('/')}/objects/{algo}/{hexdigest[:2]}/{hexdigest[2:]}", b"evil bytes")
    fs = fsspec.filesystem("lakelet", **options)
    assert fs.info("raw/b.bin")["size"] == 10  # the name, learnt from the remote
    with pytest.raises(lakelet.IntegrityError):
        fs.cat("raw/b.bin")
    assert not b.file("raw/b.bin").is_local


# --- datasets: the latest version's files ------------------------------------------------------


def _three_versions(lake: lakelet.Lake) -> None:
    """append, append, overwrite: 6 rows in the folder's files, 3 in the latest version."""
    for mode, ids in (("append", [1, 2]), ("append", [3, 4]), ("overwrite", [5, 6, 7])):
        table = pa.table({"id": ids, "dt": ["2025-01-20"] * (len(ids) - 1) + ["2025-01-21"]})
        lake.write_dataset("sales/orders", table, partition_by=["dt"], mode=mode)


def test_a_dataset_folder_lists_and_reads_only_its_latest_version(lake, fs) -> None:
    _three_versions(lake)
    latest = lake.dataset("sales/orders")
    expected = sorted(f"datasets/sales/orders/{d['relative']}" for d in latest.file_details)
    assert len(list((lake.dataset("sales/orders").folder).rglob("*.parquet"))) > len(expected)
    assert fs.glob("datasets/sales/orders/**/*.parquet") == expected
    assert fs.find("datasets") == expected
    assert fs.ls("datasets/sales", detail=False) == ["datasets/sales/orders"]
    assert fs.isdir("datasets/sales/orders/dt=2025-01-21")
    assert fs.info(expected[0])["size"] == os.path.getsize(latest.folder / expected[0].split("orders/")[1])

    dataset = pads.dataset("datasets/sales/orders", filesystem=fs, format="parquet", partitioning="hive")
    assert sorted(dataset.to_table().column("id").to_pylist()) == [5, 6, 7]
    con = duckdb.connect()
    con.register_filesystem(fs)
    rows = con.sql("SELECT sum(id) FROM read_parquet('lakelet://datasets/sales/orders/*/*.parquet')")
    assert rows.fetchall() == [(18,)]
    older = next(p for p in latest.folder.rglob("*.parquet") if str(p) not in latest.files)
    with pytest.raises(FileNotFoundError):  # a file of an older version is not there
        fs.cat(f"datasets/sales/orders/{older.relative_to(latest.folder).as_posix()}")


@pytest.mark.parametrize("remote", ["s3"], indirect=True)
def test_a_second_machine_reads_a_dataset_through_lakelet_urls(remote, machine) -> None:
    a, b = machine("a"), machine("b")
    _three_versions(a)
    b.sync()
    fs = fsspec.filesystem("lakelet", lake=str(b.root))
    paths = fs.glob("datasets/sales/orders/**/*.parquet")
    assert len(paths) == len(a.dataset("sales/orders").files)
    ids = pads.dataset(paths, filesystem=fs, format="parquet").to_table().column("id").to_pylist()
    assert sorted(ids) == [5, 6, 7]  # each file fetched from the bucket on first read, verified
