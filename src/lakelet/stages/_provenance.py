"""Where code lives: file, line, git commit, remote, a browsable URL, and whether the tree was dirty.

Git is asked only when a stage runs (a cached call pays for no subprocess),
and for a repository's root and remote only once per process.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

from lakelet.core import _config
from lakelet.lake._add import add_environment

__all__ = ["browsable_base", "environment", "source_location", "source_text"]

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


def environment() -> dict[str, Any]:
    return {"user": _config.current_user(), **add_environment(), "executable": sys.executable}
