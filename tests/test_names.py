"""Name validation at every entry point, and a rejected name changes nothing."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

import lakelet
from lakelet.core._names import check_names, validate_name

from .conftest import run_lakelet, snapshot

BAD_NAMES = [
    "",
    "/etc/passwd",
    "../escape",
    "a/../../b",
    "a/./b",
    "a//b",
    "trailing/",
    "nul\x00byte",
    "tab\tchar",
    "newline\n",
    "del\x7f",
    "back\\slash",
    "x" * 1025,
    "é" * 513,  # 1026 bytes in UTF-8
]
GOOD_NAMES = ["a", "raw/orders.csv", "a b/ünïcode ✓.txt", "x" * 1024, ".hidden/file", "a..b"]
# each rule's edge, on both sides of it
NEAR_MISSES = [
    *[".", "..", "./a", "a/.", "a/..", "../", "/", "//", "a/", "\\", "a\\"],
    *["...", "a/.../b", ".a/..b", "a./b", "a/.b", "a /b", " ", "\x1f", "\x20", "~", "\x80", "\u0085"],
    *["é" * 512, "é" * 511 + "xx", "x" * 1023 + "é", "✓" * 341 + "x", "✓" * 342, "\U0001f600" * 256],
    *["a\u2028b", "\ufeff", "a/\u200b/b", "\U0001f600" * 257],
]


def _one_by_one(name: str) -> str | None:
    try:
        validate_name(name)
    except lakelet.InvalidNameError as e:
        return str(e)
    return None


def _column_wise(names: list[str]) -> str | None:
    try:
        check_names(pa.chunked_array([pa.array(names, pa.string())]))
    except lakelet.InvalidNameError as e:
        return str(e)
    return None


@pytest.mark.parametrize("name", BAD_NAMES + GOOD_NAMES + NEAR_MISSES)
def test_the_column_check_of_names_gives_validate_names_answer(name: str) -> None:
    assert _column_wise(["ok", name, "ok/too"]) == _one_by_one(name)


def test_the_column_check_of_names_gives_validate_names_answer_on_random_names() -> None:
    rng = random.Random(19)
    alphabet = [*"ab./\\ é✓", "\x00", "\x01", "\t", "\n", "\x1f", "\x7f", "\x85", "\u2028", "\U0001f600"]
    names = ["".join(rng.choices(alphabet, k=rng.randint(0, 7))) for _ in range(3000)]
    names += [
        "".join(rng.choices(["x", "é", "✓", "\U0001f600"], k=rng.randint(250, 1030))) for _ in range(300)
    ]
    verdicts = [_one_by_one(n) for n in names]
    assert sum(v is None for v in verdicts) > 300 and sum(v is not None for v in verdicts) > 300
    assert [_column_wise([n]) for n in names] == verdicts
    # a whole column: the message of its first bad name
    assert _column_wise(names) == next(v for v in verdicts if v is not None)
    assert _column_wise([n for n, v in zip(names, verdicts, strict=True) if v is None]) is None


def test_a_column_of_names_that_is_not_utf8_is_refused() -> None:
    data = b"good" + b"ab\xff\xfe"
    column = pa.Array.from_buffers(
        pa.string(), 2, [None, pa.py_buffer(bytes([0, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0])), pa.py_buffer(data)]
    )
    with pytest.raises(lakelet.InvalidNameError, match="not UTF-8"):
        check_names(column)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_rejected(name: str) -> None:
    with pytest.raises(lakelet.InvalidNameError):
        validate_name(name)


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_names_pass(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["../escape", "/abs", "a//b", "nul\x00"])
def test_every_entry_point_rejects_bad_names_and_changes_nothing(lake, make_file, name) -> None:
    src = make_file("a.txt", "content")
    lake.add(src, "ok.txt")
    lake.pipeline("run").puts("kept", b"1")
    before = snapshot(lake.root)
    calls = [
        lambda: lake.add(src, name),
        lambda: lake.file(name),
        lambda: lake.exists(name),
        lambda: lake.ls(name),
        lambda: lake.rm(name, force=True),
        lambda: lake.pipeline("run").puts(name, b"x"),
        lambda: lake.pipeline("run").put(name, src),
        lambda: lake.pipeline("run").gets(name),
        lambda: lake.pipeline("run").delete(name),
        lambda: lake.user.puts(name, b"x"),
        lambda: lake.pipeline(name),
        lambda: lakelet.File(name),
    ]
    for call in calls:
        with pytest.raises(lakelet.InvalidNameError):
            call()
    assert snapshot(lake.root) == before


def test_a_directory_whose_file_would_make_a_bad_name_adds_nothing(lake, make_file) -> None:
    make_file("dir/ok.txt", "1")
    make_file("dir/bad\x01.txt", "2")
    before = snapshot(lake.root)
    with pytest.raises(lakelet.InvalidNameError):
        lake.add(make_file("dir/ok.txt", "1").parent, "d")
    assert snapshot(lake.root) == before
    assert lake.ls() == []


@pytest.mark.parametrize("run_id", ["a/b", "..", "", "x\ny"])
def test_run_ids_and_users_are_single_safe_segments(lake, run_id, monkeypatch) -> None:
    with pytest.raises(lakelet.InvalidNameError):
        lake.pipeline(run_id)
    monkeypatch.setenv("LAKELET_USER", run_id or "..")
    with pytest.raises(lakelet.InvalidNameError):
        lake.user.puts("x", b"1")


NFC, NFD = "caf\u00e9.csv", "cafe\u0301.csv"  # 'café.csv' both, as typed and as macOS spells it


def test_nfc_and_nfd_spellings_are_one_name(lake, make_file, tmp_path) -> None:
    assert NFC != NFD and validate_name(NFD) == NFC
    lake.add(make_file("a.csv", "a,b\n"), NFD)
    assert [f.name for f in lake.ls()] == [NFC]
    assert lake.exists(NFC) and lake.file(NFC).read_text() == "a,b\n"
    with pytest.raises(lakelet.NameExistsError):  # not a second name that looks the same
        lake.add(make_file("other.csv", "other"), NFC)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / NFD).write_text("from a folder")
    lake.add(folder, "dir")
    assert lake.file(f"dir/{NFC}").read_text() == "from a folder"
    assert [f.name for f in lake.ls("dir/")] == [f"dir/{NFC}"]
    lake.user.puts(NFD, b"scoped")
    assert lake.user.gets(NFC) == b"scoped" and lake.user.list() == [NFC]
    done = run_lakelet("--lake", str(lake.root), "cat", NFD)
    assert done.returncode == 0 and done.stdout == b"a,b\n", done.stderr
