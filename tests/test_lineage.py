"""Lineage: every output and every add says how it came to be, down to the commit and line."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid

import pytest

import lakelet
from lakelet.stages._provenance import browsable_base

from .conftest import run_lakelet

PIPE = """
import lakelet
import pyarrow  # imported by the module: its version is in the lineage


@lakelet.stage(raw=lakelet.raw("raw/in.txt"))
def parse(raw):
    return [int(x) for x in open(raw).read().split()]


@lakelet.stage(rows=parse)
def total(rows, offset: int = 0):
    return sum(rows) + offset
"""


@pytest.fixture
def project(tmp_path, monkeypatch, lake, make_file):
    """A git repository with a pipeline module, its lake, one run done."""
    repo = tmp_path / "repo"
    repo.mkdir()
    name = f"pipe_{uuid.uuid4().hex[:8]}"
    (repo / f"{name}.py").write_text(PIPE)
    git = ["git", "-c", "user.email=dev@example.com", "-c", "user.name=dev"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run(
        [*git, "remote", "add", "origin", "https://token123@github.com/acme/pipes.git"], cwd=repo, check=True
    )
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "pipeline"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    commit = head.stdout.strip()
    monkeypatch.syspath_prepend(str(repo))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    lake.add(make_file("in.txt", "1 2 3"), "raw/in.txt")
    lakelet.use(lake)
    module = importlib.import_module(name)
    assert module.total(offset=4) == 10
    outputs = [f for f in lake.ls("stages/") if "/output." in f.name]
    final = next(f for f in outputs if ".total/" in f.name)
    return {"lake": lake, "module": module, "commit": commit, "final": final, "name": name, "repo": repo}


def test_stage_output_lineage_has_every_field(project) -> None:
    record = project["final"].lineage()
    assert record["kind"] == "stage" and record["stage"] == f"{project['name']}.total"
    assert record["outputs"] == [{"name": project["final"].name, "digest": project["final"].digest}]
    assert record["parts"]["params"] == {"offset": 4}
    assert "def total(rows, offset: int = 0):" in record["code_source"] and record["code_digest"]
    git = record["source"]["git"]
    assert git["commit"] == project["commit"] and git["dirty"] is False
    assert git["url"] == f"https://github.com/acme/pipes/blob/{project['commit']}/{project['name']}.py#L11"
    assert "token123" not in json.dumps(record)  # credentials in a remote URL never reach lineage
    assert record["packages"]["pyarrow"] == __import__("pyarrow").__version__
    env = record["environment"]
    assert env["user"] == "tester@example.com" and env["python"] and env["lakelet"] and env["host"]
    assert record["started_at"] <= record["ended_at"] and record["duration_s"] >= 0


def test_add_lineage_and_downstream(project) -> None:
    lake = project["lake"]
    added = lake.file("raw/in.txt").lineage()
    assert added["kind"] == "add" and added["source"].endswith("in.txt")
    assert added["user"] == "tester@example.com" and added["environment"]["host"]
    derived = [f.name for f in lake.file("raw/in.txt").downstream()]
    assert len(derived) == 2 and derived[-1] == project["final"].name
    assert project["final"].downstream() == []


def test_cli_lineage_formats(project) -> None:
    lake, final = project["lake"], project["final"].name
    env = {"LAKELET_HOME": str(lake.root), "COLUMNS": "200"}
    text = run_lakelet("lineage", final, env=env)
    assert text.returncode == 0, text.stderr
    out = text.stdout.decode()
    assert "inputs" in out and "creation method" in out and "outputs" in out
    assert "raw/in.txt" in out and f"{project['name']}.parse" in out and "github.com/acme/pipes" in out

    records = json.loads(run_lakelet("lineage", final, "--format", "json", env=env).stdout)
    assert [r.get("stage", "add") for r in records] == [
        f"{project['name']}.total",
        f"{project['name']}.parse",
        "add",
    ]
    one = json.loads(run_lakelet("lineage", final, "--format", "json", "--depth", "1", env=env).stdout)
    assert len(one) == 1

    dot = run_lakelet("lineage", final, "--format", "dot", env=env).stdout.decode()
    assert dot.startswith("digraph lineage {") and dot.count("->") == 6
    mermaid = run_lakelet("lineage", final, "--format", "mermaid", env=env).stdout.decode()
    assert mermaid.startswith("flowchart LR") and mermaid.count("-->") == 6

    down = run_lakelet("lineage", "raw/in.txt", "--downstream", "--format", "json", env=env)
    assert [d["name"] for d in json.loads(down.stdout)][-1] == final
    missing = run_lakelet("lineage", "nope.txt", env=env)
    assert missing.returncode == 1 and missing.stderr.decode().startswith("error: no name")


@pytest.mark.parametrize(
    "remote, base",
    [
        ("git@github.com:acme/pipes.git", "https://github.com/acme/pipes"),
        ("https://gitlab.com/group/sub/proj.git", "https://gitlab.com/group/sub/proj"),
        ("ssh://git@bitbucket.org/team/repo.git", "https://bitbucket.org/team/repo"),
        ("https://git.internal.example/x/y.git", None),
    ],
)
def test_browsable_urls_for_known_forges(remote, base) -> None:
    assert browsable_base(remote) == base


def test_a_run_from_an_edited_tree_is_marked_dirty(project) -> None:
    source = project["repo"] / f"{project['name']}.py"
    source.write_text(source.read_text() + "\n# work in progress\n")
    assert project["module"].total(offset=5) == 11
    final = next(
        f
        for f in project["lake"].ls("stages/")
        if ".total/" in f.name and "/output." in f.name and f.name != project["final"].name
    )
    assert final.lineage()["source"]["git"]["dirty"] is True


def test_cli_lineage_fits_80_columns(project) -> None:
    """Three boxes with a stage output's 40-hex key twice ran ~230 columns wide: at 80 they
    are stacked with keys cut to 12 hex digits; the JSON keeps the full names."""
    lake, final = project["lake"], project["final"]
    out = run_lakelet("lineage", final.name, env={"LAKELET_HOME": str(lake.root), "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert "creation method" in out.stdout.decode() and "raw/in.txt" in out.stdout.decode()
    records = json.loads(
        run_lakelet("lineage", final.name, "--format", "json", env={"LAKELET_HOME": str(lake.root)}).stdout
    )
    assert any(o["name"] == final.name for r in records for o in r["outputs"])
