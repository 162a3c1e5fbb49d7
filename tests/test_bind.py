"""Lake names are bound one segment per add: processes racing on one lake, a segment its
writer never indexed, an index rebuilt from segments, and lakes written before segments."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import lakelet
from lakelet.core._names import name_key
from lakelet.storage._refs import NameRecord

_RACER = r"""
import json, sys
import lakelet
lake = lakelet.open(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    src, name = line.split()
    try:
        lake.add(src, name)
        print(json.dumps({"won": True}), flush=True)
    except lakelet.NameExistsError as e:
        print(json.dumps({"won": False, "error": str(e)}), flush=True)
"""

ADD_SCRIPT = """
import sys, lakelet
lakelet.open(sys.argv[1]).add(sys.argv[2], sys.argv[3])
"""


def _tree(root: Path, tag: str, n: int = 40) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"f{i:02}.txt").write_text(f"{tag} {i}")
    return root


def test_two_processes_adding_one_directory_name_one_wins_whole(lake, tmp_path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(lake.root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:  # both have opened the lake: from here the race is the add itself
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for round_ in range(5):
            trees = [_tree(tmp_path / f"{who}{round_}", f"{who}{round_}") for who in "ab"]
            for p, tree in zip(procs, trees, strict=True):  # both lines go out back to back
                assert p.stdin is not None
                p.stdin.write(f"{tree} race/{round_}\n")
                p.stdin.flush()
            results = [json.loads(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
            assert sorted(r["won"] for r in results) == [False, True], results
            loser = next(r for r in results if not r["won"])
            assert "write-once" in loser["error"]
            files = lakelet.open(lake.root).ls(f"race/{round_}/")
            assert len(files) == 40
            contents = {f.read_text().split()[0] for f in files}
            assert len(contents) == 1, contents  # every name from the one winner, none mixed
        same = _tree(tmp_path / "same", "same")
        for p in procs:
            p.stdin.write(f"{same} race/same\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        assert [json.loads(p.stdout.readline())["won"] for p in procs] == [True, True]  # type: ignore[union-attr]
    finally:
        for p in procs:
            p.stdin.close()  # type: ignore[union-attr]
            p.wait(timeout=60)
    assert lakelet.open(lake.root).fsck().ok


def test_a_segment_written_but_not_indexed_is_found_by_the_next_process(lake, tmp_path) -> None:
    """A writer killed after binding a batch but before indexing it loses no name."""
    tree = _tree(tmp_path / "src", "x", n=12)
    env = {**os.environ, "LAKELET_CRASH_AT": "names-bound"}
    crashed = subprocess.run(
        [sys.executable, "-c", ADD_SCRIPT, str(lake.root), str(tree), "late"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    fresh = lakelet.open(lake.root)
    assert fresh.exists("late/f03.txt")  # a lookup that misses the index reads the next segment
    assert [f.name for f in fresh.ls("late/")] == [f"late/f{i:02}.txt" for i in range(12)]
    assert fresh.file("late/f11.txt").read_text() == "x 11"
    assert len(lake.ls("late/")) == 12  # a process that opened the lake before the crash too


def test_the_index_is_rebuilt_from_segments_and_tombstones(lake, make_file, tmp_path) -> None:
    lake.add(_tree(tmp_path / "d", "d", n=5), "d")
    lake.add(make_file("one.txt", "one"), "one.txt")
    lake.rm("d/f02.txt", force=True)
    lake.close()
    for leftover in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
        (lake.root / leftover).unlink(missing_ok=True)
    reopened = lakelet.open(lake.root)
    assert [f.name for f in reopened.ls()] == ["d/f00.txt", "d/f01.txt", "d/f03.txt", "d/f04.txt", "one.txt"]
    assert not reopened.exists("d/f02.txt")
    with pytest.raises(lakelet.NameExistsError, match="removed"):
        reopened.add(make_file("again.txt", "d 2"), "d/f02.txt")
    reopened.add(make_file("two.txt", "two"), "two.txt")  # numbering continues after the rebuild
    assert reopened.fsck().names_indexed == 7


def test_a_lake_with_per_name_records_opens_and_keeps_them_write_once(lake, make_file) -> None:
    """Lakes written before segments hold one record file per name; they stay readable."""
    f = lake.add(make_file("new.txt", "new"), "new.txt")
    old = NameRecord("lake", "old.txt", f.digest, f.size, "2026-01-01T00:00:00.000000Z", "someone")
    key = name_key("old.txt")
    (lake.root / "names" / key[:2]).mkdir(parents=True)
    (lake.root / "names" / key[:2] / f"{key}.json").write_bytes(old.to_json())
    lake.close()
    with sqlite3.connect(lake.root / "index.sqlite") as db:  # as an index of that time: no segment count
        db.execute("DELETE FROM state WHERE key = 'segments_applied'")
    reopened = lakelet.open(lake.root)
    assert reopened.file("old.txt").read_text() == "new"
    assert [x.name for x in reopened.ls()] == ["new.txt", "old.txt"]
    with pytest.raises(lakelet.NameExistsError):
        reopened.add(make_file("other.txt", "other"), "old.txt")


def test_a_segment_line_is_the_record_json_byte_for_byte() -> None:
    """Segments are encoded by hand for speed; every field of a record must still be in them."""
    values = {
        "scope": "lake",
        "name": 'd/\u00e9 "q" \u2028 \U0001f600.txt',  # (a name holds no '\\': the creator does)
        "digest": "blake3:" + "ab" * 32,
        "size": 12,
        "created_at": "2026-01-01T00:00:00.000000Z",
        "creator": '\u00e9@x \\ "q"',
        "meta": {"z": [1, None, {"b": "\u00e9"}], "a": 2.5},
        "removed_at": "2026-01-02T00:00:00Z",
    }
    assert {f.name for f in dataclasses.fields(NameRecord)} == set(values)  # a new field: add it here
    full = NameRecord(**values)
    shared = {"source": "/x"}
    records = [full, dataclasses.replace(full, removed_at=None)]
    when = "2026-01-01T00:00:00Z"
    records += [NameRecord("lake", "a", "blake3:" + "cd" * 32, 0, when, "")]
    records += [NameRecord("lake", n, "sha256:" + "ef" * 32, 1, when, "c", shared) for n in "bc"]
    assert NameRecord.lines(records) == b"".join(r.to_json() + b"\n" for r in records)
    assert [NameRecord.from_json(line) for line in NameRecord.lines(records).splitlines()] == records


# A lake's lakelet.toml as its owner may have edited it, from before segments.
HAND_EDITED = """# the team lake: ask before changing
[lake]
format = 1   # lakelet 0.1 wrote this
transfers = 4

# for the bucket, later
[storage_options]
anon = true
"""


def _config_text(lake: lakelet.Lake) -> str:
    with open(lake.root / "lakelet.toml", newline="") as f:
        return f.read()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (HAND_EDITED, HAND_EDITED.replace("format = 1   #", "format = 2   #")),
        ("[lake]\r\nformat=1\r\n", "[lake]\r\nformat=2\r\n"),
        (
            "# no format: older lakelets read 1\n[lake] # here\ntransfers = 4\n",
            "# no format: older lakelets read 1\n[lake] # here\nformat = 2\ntransfers = 4\n",
        ),
        ("[storage_options]\nanon = true", "[storage_options]\nanon = true\n[lake]\nformat = 2\n"),
    ],
    ids=["hand-edited", "crlf", "no-format", "no-lake-table"],
)
def test_the_first_segment_raises_a_format_1_lake_to_2_and_changes_nothing_else(
    lake, make_file, before, after
) -> None:
    """A lakelet older than segments reads format 1 and would not see their names: once a
    segment is written, the lake says format 2, which such a lakelet refuses."""
    (lake.root / "lakelet.toml").write_bytes(before.encode())
    old = lakelet.open(lake.root)
    assert old.ls() == [] and _config_text(old) == before  # reading needs no segment
    old.add(make_file("a.txt", "a"), "a.txt")
    assert _config_text(old) == after
    assert lakelet.open(lake.root).file("a.txt").read_text() == "a"


def test_a_format_1_lake_says_2_before_its_first_segment_can_be_seen(lake, make_file) -> None:
    (lake.root / "lakelet.toml").write_text(HAND_EDITED)
    src = make_file("a.txt", "a")
    env = {**os.environ, "LAKELET_CRASH_AT": "segment-written"}
    crashed = subprocess.run(
        [sys.executable, "-c", ADD_SCRIPT, str(lake.root), str(src), "a.txt"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr.decode()
    assert "format = 2   #" in _config_text(lake) and not lake.exists("a.txt")


def test_a_format_1_lake_that_already_holds_segments_is_raised_when_opened(lake, make_file) -> None:
    """Lakes a lakelet from before this fix wrote segments into, leaving format 1."""
    lake.add(make_file("a.txt", "a"), "a.txt")
    (lake.root / "lakelet.toml").write_text(HAND_EDITED)
    assert lakelet.open(lake.root).file("a.txt").read_text() == "a"
    assert _config_text(lake) == HAND_EDITED.replace("format = 1   #", "format = 2   #")


def test_a_config_the_format_cannot_be_raised_in_refuses_the_bind_in_one_line(lake, make_file) -> None:
    config = "lake = { format = 1 }  # an inline table: no line of its own to change\n"
    (lake.root / "lakelet.toml").write_text(config)
    with pytest.raises(lakelet.ConfigError, match=r"set `format = 2` under \[lake\]"):
        lakelet.open(lake.root).add(make_file("a.txt", "a"), "a.txt")
    assert _config_text(lake) == config and not lakelet.open(lake.root).exists("a.txt")
    assert not (lake.root / "names" / "segments").exists()
