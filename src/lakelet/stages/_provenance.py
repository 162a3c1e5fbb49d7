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

__all__ = ["ask_git_ahead", "browsable_base", "environment", "source_location", "source_text"]

_FORGES = {
    "github.com": "{base}/blob/{commit}/{path}#L{line}",
    "gitlab.com": "{base}/-/blob/{commit}/{path}#L{line}",
    "bitbucket.org": "{base}/src/{commit}/{path}#lines-{line}",
}


_Started = list["subprocess.Popen[str] | None"]


def _git(cwd: Path, *commands: list[str]) -> list[str | None]:
    """The output of each git command (None where it failed), run side by side: a fresh
    process's first stage call waits for one git process, not one after another."""
    return [_output(proc) for proc in _start(cwd, *commands)]


def _start(cwd: Path, *commands: list[str]) -> _Started:
    started: _Started = []
    for args in commands:
        try:
            started.append(
                subprocess.Popen(
                    ["git", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
                )
            )
        except OSError:
            started.append(None)
    return started


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
# git's status (and origin) asked when a stage was decorated (``ask_git_ahead``), by repository:
# (the process that asked, the fingerprint then, when it was asked, [status, origin?] processes)
_ahead: dict[Path, tuple[int, tuple[Any, ...], float, _Started]] = {}
_STATUS = ["status", "--porcelain=v2", "--branch", "--untracked-files=no"]
_ORIGIN = ["remote", "get-url", "origin"]


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


def ask_git_ahead(func: Any) -> None:
    """Start asking git for the status and origin of the repository of ``func``'s file, in the
    background: ``stage`` does it when a function is decorated, so that the first call, which
    records the commit, does not wait for git (~8 ms). The answer is used as one asked at that
    call would be: only if nothing the fingerprint watches changed since and it is fresh
    (``_GIT_STATE_TTL_S``)."""
    source = _source_file(func)
    repo = _repository(source.parent) if source is not None else None
    if source is None or repo is None or repo["root"] in _git_states or repo["root"] in _ahead:
        return
    root: Path = repo["root"]
    started = _start(root, _STATUS, *([] if root in _remotes else [_ORIGIN]))
    _ahead[root] = (os.getpid(), _fingerprint(repo, source), time.monotonic(), started)


def _git_state(repo: dict[str, Any], source: Path) -> tuple[str | None, bool]:
    """(HEAD's commit, whether tracked files differ from it), asked again only when needed."""
    root: Path = repo["root"]
    fingerprint = _fingerprint(repo, source)
    now = time.monotonic()
    known = _git_states.get(root)
    if known is not None and known[0] == fingerprint and now - known[1] < _GIT_STATE_TTL_S:
        return known[2], known[3]
    ahead = _asked_ahead(root, fingerprint, now)
    if ahead is not None:
        out, asked = ahead
    else:
        asked = now
        if root in _remotes:
            (out,) = _git(root, _STATUS)
        else:
            out, _remotes[root] = _git(root, _STATUS, _ORIGIN)
    commit, dirty = _status(out)
    _git_states[root] = (fingerprint, asked, commit, dirty)
    return commit, dirty


def _asked_ahead(root: Path, fingerprint: tuple[Any, ...], now: float) -> tuple[str | None, float] | None:
    """(git's status asked ahead, when it was asked), if it still holds; its origin is kept."""
    ahead = _ahead.pop(root, None)
    if ahead is None or ahead[0] != os.getpid():  # a forked child shares the pipes: not its answer
        return None
    _, then, asked, (status, *origin) = ahead
    if origin:
        _remotes[root] = _output(origin[0])
    if then != fingerprint or now - asked >= _GIT_STATE_TTL_S:
        if status is not None:  # stale: not waited for
            status.kill()
            status.wait()
        return None
    return _output(status), asked


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


def _source_file(func: Any) -> Path | None:
    """The file ``func`` was defined in, as ``_where`` names it (without reading it)."""
    try:
        path = Path(inspect.getsourcefile(func) or "").resolve()
    except (OSError, TypeError):
        return None
    return path if path.name else None


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
