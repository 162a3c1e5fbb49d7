"""The `lakelet` command: every subcommand, one-line errors, exit codes, --json."""

from __future__ import annotations

import json
import os

import pytest

import lakelet

from .conftest import run_lakelet


@pytest.fixture
def home(tmp_path):
    root = tmp_path / "cli-lake"
    out = run_lakelet("init", str(root))
    assert out.returncode == 0 and b"lake ready" in out.stdout
    return {"LAKELET_HOME": str(root)}


def _ok(*args, env, **kw):
    out = run_lakelet(*args, env=env, **kw)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


def _fails(*args, env, **kw) -> str:
    out = run_lakelet(*args, env=env, **kw)
    err = out.stderr.decode()
    assert out.returncode != 0
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


def test_add_ls_info_cat_get(home, make_file, tmp_path) -> None:
    src = make_file("orders.csv", "id,amount\n1,9.5\n")
    assert "added raw/orders.csv" in _ok("add", str(src), "raw/orders.csv", env=home)
    make_file("dir/a.txt", "a")
    assert "2 files under raw/dir/" in _ok(
        "add", str(make_file("dir/b.txt", "b").parent), "raw/dir", env=home
    )
    listing = _ok("ls", "raw/", env=home)
    assert "raw/orders.csv" in listing and "local" in listing
    header, *rows = listing.splitlines()
    assert header.split() == ["name", "size", "created", "creator", "state"] and len(rows) == 3
    sizes = {line.index(" B ") for line in rows}  # right-aligned: every size ends in one column
    assert len(sizes) == 1 and header.index("size") + 4 == sizes.pop() + 2
    assert rows[2].split()[:3] == ["raw/orders.csv", "16", "B"] and rows[2].endswith("local")
    listed_json = _ok("ls", "--json", env=home)
    assert listed_json.splitlines()[1].startswith('  {"name": "raw/dir/a.txt", ')  # an entry a line
    entries = json.loads(listed_json)
    assert [e["name"] for e in entries] == ["raw/dir/a.txt", "raw/dir/b.txt", "raw/orders.csv"]
    assert entries[2]["digest"].startswith("blake3:") and entries[2]["local"] is True
    info = json.loads(_ok("info", "raw/orders.csv", "--json", env=home))
    assert info["size"] == 16 and info["creator"] == "tester@example.com"
    text_info = _ok("info", "raw/orders.csv", env=home)
    assert "blake3:" in text_info and "tester@example.com" in text_info
    assert _ok("cat", "raw/orders.csv", env=home) == "id,amount\n1,9.5\n"
    _ok("get", "raw/orders.csv", str(tmp_path), env=home)
    assert (tmp_path / "orders.csv").read_text() == "id,amount\n1,9.5\n"
    _ok("get", "raw/orders.csv", str(tmp_path / "renamed.csv"), env=home)
    assert (tmp_path / "renamed.csv").exists()


def test_a_failed_get_leaves_no_temp_file(home, make_file, tmp_path) -> None:
    _ok("add", str(make_file("o.csv", "id\n1\n")), "raw/o.csv", env=home)
    export = tmp_path / "export"
    (export / "o.csv").mkdir(parents=True)  # the target is taken by a directory
    assert "is a directory" in _fails("get", "raw/o.csv", str(export), env=home)  # export/o.csv
    assert [p.name for p in export.iterdir()] == ["o.csv"] and not any((export / "o.csv").iterdir())


def test_add_move(home, make_file) -> None:
    src = make_file("m.txt", "m")
    _ok("add", "--move", str(src), "m.txt", env=home)
    assert not src.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("info", "missing.txt"), "no name 'missing.txt'"),
        (("cat", "../etc/passwd"), "invalid name"),
        (("add", "/definitely/not/here", "x"), "does not exist"),
        (("ls", "--scope", "pipeline/../x"), "invalid run id"),
        (("rm", "some-name"), "needs force"),
        (("get", "missing.txt", "/tmp"), "no name"),
    ],
)
def test_expected_errors_are_one_line(home, args, message) -> None:
    assert message in _fails(*args, env=home)


def test_conflicting_add_fails_and_changes_nothing(home, make_file) -> None:
    _ok("add", str(make_file("a", "one")), "n", env=home)
    assert "write-once" in _fails("add", str(make_file("b", "two")), "n", env=home)
    assert _ok("cat", "n", env=home) == "one"


def test_no_lake_says_how_to_init(tmp_path) -> None:
    err = _fails("ls", env={"LAKELET_HOME": str(tmp_path / "none")})
    assert "lakelet init" in err


def test_scoped_listing_and_rm(home) -> None:
    lake = lakelet.open(home["LAKELET_HOME"])
    lake.pipeline("run-1").puts("a/x", b"1")
    lake.pipeline("run-1").puts("a/y", b"2")
    lake.user.puts("note", b"n")
    assert "a/x" in _ok("ls", "--scope", "pipeline/run-1", env=home)
    assert "note" in _ok("ls", "--scope", "user", env=home)
    assert _ok("cat", "--scope", "user", "note", env=home) == "n"
    _ok("rm", "--scope", "pipeline/run-1", "--recursive", "a", env=home)
    assert lake.pipeline("run-1").list() == []


def test_rm_force_lake_name(home, make_file) -> None:
    _ok("add", str(make_file("a", "a")), "a", env=home)
    _ok("rm", "--force", "a", env=home)
    assert "removed" in _fails("cat", "a", env=home)


def test_fsck_exit_status_reports_corruption(home, make_file) -> None:
    _ok("add", str(make_file("a", "a")), "a", env=home)
    assert "checked 1 objects" in _ok("fsck", env=home)
    f = lakelet.open(home["LAKELET_HOME"]).file("a")
    path = f.path
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    out = run_lakelet("fsck", env=home)
    assert out.returncode == 1
    assert f"corrupt: {f.digest}" in out.stderr.decode()
    # fsck moved the corrupt object to quarantine: reading the name now fails
    # with one line, and the tampered bytes never reach stdout
    out = run_lakelet("cat", "a", env=home)
    assert out.returncode == 1 and b"tampered" not in out.stdout


def test_help_everywhere() -> None:
    for command in ["", "init", "ls", "add", "info", "cat", "get", "rm", "fsck", "run"]:
        out = run_lakelet(*([command] if command else []), "--help")
        assert out.returncode == 0 and b"Usage:" in out.stdout


def test_piped_listing_keeps_long_names_whole(home, make_file) -> None:
    name = "raw/" + "a-rather-long-directory-name/" * 4 + "orders-2025-01-20.csv"
    _ok("add", str(make_file("o.csv", "x")), name, env=home)
    assert name in _ok("ls", env=home).split()


PIPELINE = """
import lakelet

@lakelet.stage
def one():
    return 1

@lakelet.stage(x=one)
def two(x):
    return x + 1

@lakelet.stage(x=one)
def broken(x):
    raise ValueError("broken on purpose")

NOT_A_STAGE = 3
"""


@pytest.fixture
def pipeline(tmp_path):
    path = tmp_path / "cli_pipeline.py"
    path.write_text(PIPELINE)
    return path


def test_run_a_stage_from_a_file_then_find_it_cached(home, pipeline, tmp_path) -> None:
    out = run_lakelet(
        "run",
        f"{pipeline}:two",
        "--executor",
        "processes",
        "--max-workers",
        "2",
        "--run-id",
        "first",
        env=home,
    )
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == "run first: 2 ran, 0 skipped, 0 failed\n"
    assert out.stderr == b""  # the live line is for terminals only
    # by module name, from the folder it is in, into the lake --lake names
    again = run_lakelet("--lake", home["LAKELET_HOME"], "run", "cli_pipeline:two", "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr.decode()
    report = json.loads(again.stdout)
    assert report["ran"] == [] and report["skipped"] == ["cli_pipeline.two"]
    assert report["stages"]["cli_pipeline.two"]["why"] == "cached"
    assert [r["run_id"] for r in json.loads(_ok("runs", "--json", env=home))] == ["first", report["run_id"]]


def test_run_a_failing_stage_is_one_line(home, pipeline) -> None:
    err = _fails("run", f"{pipeline}:broken", "--run-id", "bad", env=home)
    assert "cli_pipeline.broken failed (ValueError: broken on purpose)" in err and "(run bad)" in err


@pytest.mark.parametrize(
    "target, message",
    [
        ("two", "names no stage: use path/to/pipeline.py:stage or package.module:stage"),
        ("missing.py:two", "no file missing.py"),
        ("{pipeline}:nope", "has no 'nope'"),
        ("{pipeline}:NOT_A_STAGE", "is not a @lakelet.stage (int)"),
        ("no_such_module:two", "no module named 'no_such_module'"),
    ],
)
def test_run_with_a_bad_target_is_one_line(home, pipeline, target, message) -> None:
    assert message in _fails("run", target.format(pipeline=pipeline), env=home)


def test_ls_keeps_stage_outputs_out_of_the_listing_unless_asked(home, make_file) -> None:
    lake = lakelet.open(home["LAKELET_HOME"])
    lake.add(make_file("chosen.txt", "mine"), "reports/chosen.txt")
    with lakelet.use(lake):
        lakelet.stage(name="reports/named.json")(lambda: {"a": 1})()  # a name the user chose
        lakelet.stage(lambda x: x + 1).__call__(1)
    out = run_lakelet("ls", env=home)
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.decode().splitlines()[1:] if line.strip()]
    assert names == ["reports/chosen.txt", "reports/named.json"]
    assert "3 stage outputs and run records under stages/ not shown" in out.stderr.decode()
    listed = [e["name"] for e in json.loads(_ok("ls", "--json", "--all", env=home))]
    assert len(listed) == 5 and sum(n.startswith("stages/") for n in listed) == 3
    assert "stages/" in _ok("ls", "stages/", env=home)
