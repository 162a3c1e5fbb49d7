"""Where code lives: file, line, git commit, remote, a browsable URL, and whether the tree was dirty.

Git is asked only when a stage runs (a cached call pays for no subprocess),
for a repository's root and remote only once per process, and for its commit
and dirtiness again only when something may have changed them: a commit, a
checkout, an ``add`` (git's HEAD, branch ref or index changed), an edit of the
stage's own file, or after ``_GIT_STATE_TTL_S``. A fan-out of 10,000 calls
would otherwise start 20,000 git processes.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import time
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


def _git(cwd: Path, *commands: list[str]) -> list[str | None]:
    """The output of each git command (None where it failed), run side by side: a fresh
    process's first stage call waits for one git process, not one after another."""
    started: list[subprocess.Popen[str] | None] = []
    for args in commands:
        try:
            started.append(
                subprocess.Popen(
                    ["git", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
                )
            )
        except OSError:
            started.append(None)
    return [_output(proc) for proc in started]


def _output(proc: subprocess.Popen[str] | None) -> str | None:
    if proc is None:
        return None
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.SubprocessError:
        proc.kill()
        proc.wait()
        return None
    return out.strip() if proc.returncode == 0 else None


@cache
def _repository(directory: Path) -> dict[str, Any] | None:
    # The repository is found as git finds it, by the nearest .git up the tree, with no
    # process: a first stage call in a fresh process paid ~8 ms per git process, five of them.
    root = next((d for d in (directory, *directory.parents) if (d / ".git").exists()), None)
    if root is None:
        return None
    return {"root": root, "git_dir": _git_dir(root)}


def _git_dir(root: Path) -> str | None:
    """The git directory of the work tree ``root``: its .git, or where a .git file points
    (a linked worktree or a submodule)."""
    dot = root / ".git"
    if dot.is_dir():
        return str(dot)
    try:
        text = dot.read_text(errors="replace")
    except OSError:
        return None
    if not text.startswith("gitdir:"):
        return None
    return str((root / text.removeprefix("gitdir:").strip()).resolve())


_GIT_STATE_TTL_S = 2.0
_git_states: dict[Path, tuple[tuple[Any, ...], float, str | None, bool]] = {}
_remotes: dict[Path, str | None] = {}  # a repository's origin, asked once per process


def _stat_of(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _fingerprint(repo: dict[str, Any], source: Path) -> tuple[Any, ...]:
    """What changes when the commit or the dirtiness of the stage's file may have changed."""
    git_dir = Path(repo["git_dir"] or repo["root"] / ".git")
    head = git_dir / "HEAD"
    try:
        ref = head.read_text().strip().removeprefix("ref: ")
    except OSError:
        ref = ""
    ref_path = git_dir / ref if ref.startswith("refs/") else None
    return (
        ref,
        _stat_of(head),
        _stat_of(git_dir / "index"),
        _stat_of(git_dir / "packed-refs"),
        _stat_of(ref_path) if ref_path else None,
        _stat_of(source),
    )


def _git_state(repo: dict[str, Any], source: Path) -> tuple[str | None, bool]:
    """(HEAD's commit, whether tracked files differ from it), asked again only when needed."""
    root: Path = repo["root"]
    fingerprint = _fingerprint(repo, source)
    now = time.monotonic()
    known = _git_states.get(root)
    if known is not None and known[0] == fingerprint and now - known[1] < _GIT_STATE_TTL_S:
        return known[2], known[3]
    status = ["status", "--porcelain=v2", "--branch", "--untracked-files=no"]
    if root in _remotes:
        (out,) = _git(root, status)
    else:
        out, _remotes[root] = _git(root, status, ["remote", "get-url", "origin"])
    commit, dirty = _status(out)
    _git_states[root] = (fingerprint, now, commit, dirty)
    return commit, dirty


def _status(out: str | None) -> tuple[str | None, bool]:
    """(HEAD's commit, whether tracked files differ from it) from ``git status --porcelain=v2
    --branch``'s output."""
    if out is None:
        return None, False
    lines = out.splitlines()
    oid = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    commit = oid if oid and oid != "(initial)" else None
    return commit, any(not line.startswith("#") for line in lines if line)


def browsable_base(remote: str | None) -> str | None:
    """https://host/owner/repo for a GitHub, GitLab or Bitbucket remote (ssh or https)."""
    if not remote:
        return None
    m = re.match(r"^(?:git@|ssh://git@|https?://(?:[^@/]+@)?)([^:/]+)[:/](.+?)(?:\.git)?/?$", remote)
    if not m or m.group(1) not in _FORGES:
        return None
    return f"https://{m.group(1)}/{m.group(2)}"


@cache
def _where(func: Any) -> tuple[Path, int] | None:
    # Once per function, like its code identity (``_key.identity_of``): the lineage then
    # names the source the key was made of, even if the file was edited since the import.
    try:
        return Path(inspect.getsourcefile(func) or "").resolve(), inspect.getsourcelines(func)[1]
    except (OSError, TypeError):
        return None


def source_location(func: Any) -> dict[str, Any]:
    where = _where(func)
    if where is None:
        return {"file": None, "line": None, "git": None}
    filename, line = where
    repo = _repository(filename.parent) if filename.name else None
    location: dict[str, Any] = {"file": str(filename), "line": line, "git": None}
    if repo is None:
        return location
    path = filename.relative_to(repo["root"]).as_posix()
    commit, dirty = _git_state(repo, filename)  # a notebook commits and edits: see _git_state
    remote = _remotes.get(repo["root"])
    git = {"commit": commit, "remote": _redact(remote), "path": path, "dirty": dirty}
    base = browsable_base(remote)
    if base and commit:
        host = base.split("/")[2]
        git["url"] = _FORGES[host].format(base=base, commit=commit, path=path, line=line)
    location["git"] = git
    return location


@cache
def source_text(func: Any) -> str | None:
    try:
        return inspect.getsource(func)
    except (OSError, TypeError):
        return None


def _redact(remote: str | None) -> str | None:
    # https://user:token@host/… must not reach a lineage record
    return re.sub(r"//[^@/]+@", "//", remote) if remote else remote


@cache
def _host_environment() -> dict[str, str]:
    # host name and versions do not change while a process runs
    return {**add_environment(), "executable": sys.executable}


def environment() -> dict[str, Any]:
    # the user is read at every run: LAKELET_USER may be set between calls
    return {"user": _config.current_user(), **_host_environment()}
