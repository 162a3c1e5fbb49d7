"""Where code lives: file, line, git commit, remote, a browsable URL, and whether the tree was dirty.

Git is asked only when a stage runs (a cached call pays for no subprocess),
and for a repository's root and remote only once per process.
"""

from __future__ import annotations

import inspect
import json
import platform
import re
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _config
from ._expiry import current_run_record

if TYPE_CHECKING:
    from ._file import File
    from ._lake import Lake

_FORGES = {
    "github.com": "{base}/blob/{commit}/{path}#L{line}",
    "gitlab.com": "{base}/-/blob/{commit}/{path}#L{line}",
    "bitbucket.org": "{base}/src/{commit}/{path}#lines-{line}",
}


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


@cache
def _repository(directory: Path) -> dict[str, Any] | None:
    top = _git(directory, "rev-parse", "--show-toplevel")
    if not top:
        return None
    root = Path(top)
    return {"root": root, "remote": _git(root, "remote", "get-url", "origin")}


def browsable_base(remote: str | None) -> str | None:
    """https://host/owner/repo for a GitHub, GitLab or Bitbucket remote (ssh or https)."""
    if not remote:
        return None
    m = re.match(r"^(?:git@|ssh://git@|https?://(?:[^@/]+@)?)([^:/]+)[:/](.+?)(?:\.git)?/?$", remote)
    if not m or m.group(1) not in _FORGES:
        return None
    return f"https://{m.group(1)}/{m.group(2)}"


def source_location(func: Any) -> dict[str, Any]:
    try:
        filename = Path(inspect.getsourcefile(func) or "").resolve()
        line = inspect.getsourcelines(func)[1]
    except (OSError, TypeError):
        return {"file": None, "line": None, "git": None}
    repo = _repository(filename.parent) if filename.name else None
    location: dict[str, Any] = {"file": str(filename), "line": line, "git": None}
    if repo is None:
        return location
    path = filename.relative_to(repo["root"]).as_posix()
    # commit and dirtiness are read at every run (not cached): a notebook commits and edits
    commit = _git(repo["root"], "rev-parse", "HEAD")
    dirty = bool(_git(repo["root"], "status", "--porcelain", "--untracked-files=no"))
    git = {"commit": commit, "remote": _redact(repo["remote"]), "path": path, "dirty": dirty}
    base = browsable_base(repo["remote"])
    if base and commit:
        host = base.split("/")[2]
        git["url"] = _FORGES[host].format(base=base, commit=commit, path=path, line=line)
    location["git"] = git
    return location


def source_text(func: Any) -> str | None:
    try:
        return inspect.getsource(func)
    except (OSError, TypeError):
        return None


def _redact(remote: str | None) -> str | None:
    # https://user:token@host/… must not reach a lineage record
    return re.sub(r"//[^@/]+@", "//", remote) if remote else remote


def add_environment() -> dict[str, Any]:
    from . import __version__

    return {"host": socket.gethostname(), "lakelet": __version__, "python": platform.python_version()}


def environment() -> dict[str, Any]:
    return {"user": _config.current_user(), **add_environment(), "executable": sys.executable}


def downstream(lake: Lake, name: str, depth: int | None = None) -> list[File]:
    """Files derived from ``name``, breadth first, up to ``depth`` stage runs away."""
    consumers: dict[str, list[str]] = {}  # input name -> output names of runs that read it
    for run in lake._run_records():
        record = json.loads(lake.file(run.name).read_bytes())
        outputs = [o["name"] for o in record.get("outputs", [])]
        for input_name in lake_inputs(lake, record):
            consumers.setdefault(input_name, []).extend(outputs)
    seen: dict[str, None] = {}
    frontier, level = [name], 0
    while frontier and (depth is None or level < depth):
        level += 1
        frontier = [o for n in frontier for o in consumers.get(n, []) if o not in seen and o != name]
        seen.update(dict.fromkeys(frontier))
    return [lake.file(n) for n in seen]


def upstream(lake: Lake, name: str, depth: int | None = None) -> list[dict[str, Any]]:
    """The lineage records of ``name`` and of its inputs, recursively, up to ``depth`` levels."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    frontier, level = [name], 0
    while frontier and (depth is None or level < depth):
        level += 1
        next_frontier = []
        for n in frontier:
            if n in seen:
                continue
            seen.add(n)
            record = lake.file(n).lineage()
            if any(r is not record and r.get("key") and r.get("key") == record.get("key") for r in records):
                continue  # a second output of a run already listed
            records.append(record)
            next_frontier += lake_inputs(lake, record)
        frontier = next_frontier
    return records


def lake_inputs(lake: Lake, record: dict[str, Any]) -> list[str]:
    """The lake names a lineage record's run read (upstream stages: their outputs)."""
    names = []
    for identity in record.get("inputs", {}).values():
        if "name" in identity:
            names.append(identity["name"])
        elif "stage" in identity:
            names += _outputs_of_key(lake, identity["stage"], identity["key"])
    return names


def input_labels(lake: Lake, record: dict[str, Any]) -> list[str]:
    """Every input of a lineage record: lake names, local paths, the source of an add."""
    labels = lake_inputs(lake, record)
    labels += [i["path"] for i in record.get("inputs", {}).values() if "path" in i]
    if record.get("kind") == "add" and record.get("source"):
        labels.append(str(record["source"]))
    return labels


def _outputs_of_key(lake: Lake, stage: str, key: str) -> list[str]:
    run, record = current_run_record(lake, stage, key)
    if record is None:
        return []
    return [o["name"] for o in json.loads(lake.file(run).read_bytes()).get("outputs", [])]
