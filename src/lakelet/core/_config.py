"""Where the lake is and how it is configured: ``lakelet.toml`` plus the environment.

This is the only module that reads ``os.environ`` for lakelet settings; the
rest receive a ``LakeConfig``.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import secrets as _secrets
import socket
import subprocess
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from lakelet.core._durable import fsync_dir, make_dirs, publish_file
from lakelet.core._names import segment_problem
from lakelet.core.errors import (
    ConfigError,
    InvalidArgumentError,
    InvalidNameError,
    LakeNotFoundError,
    StorageError,
)

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_DIR",
    "LAYOUT_FORMAT",
    "LakeConfig",
    "UPLOAD_MODES",
    "ask_user_ahead",
    "current_user",
    "find_root",
    "load",
    "new_root",
    "progress_delay",
    "raise_format",
    "write_new",
]

CONFIG_FILE = "lakelet.toml"
DEFAULT_DIR = ".lakelet"
# 2: lake names are bound in segments (names/segments/), which a format-1 lakelet would not
# see; this lakelet still reads format-1 lakes (one record file per name), and records
# format 2 in one before it writes the lake's first segment (raise_format).
LAYOUT_FORMAT = 2
UPLOAD_MODES = ("write-through", "deferred")


@dataclass(frozen=True)
class LakeConfig:
    root: Path
    remote: str | None = None
    storage_options: dict[str, Any] = field(default_factory=dict)
    # "write-through": add uploads before it returns; "deferred": `lakelet push` uploads
    upload: str = "write-through"
    transfers: int = 16  # concurrent requests to the remote
    secrets: dict[str, Any] = field(default_factory=dict)  # the [secrets] table: backend, path…
    format: int = LAYOUT_FORMAT  # as recorded; none is 1, as every lakelet before 2 read it


def find_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The lake root: ``path``, else $LAKELET_HOME, else the nearest lakelet.toml upwards,
    else ./.lakelet (which may not exist yet)."""
    if path is not None:
        root = Path(path).expanduser()
        return root.parent if root.name == CONFIG_FILE else root
    home = os.environ.get("LAKELET_HOME")
    if home:
        return Path(home).expanduser()
    here = Path.cwd()
    for directory in (here, *here.parents):
        for candidate in (directory, directory / DEFAULT_DIR):
            if (candidate / CONFIG_FILE).is_file():
                return candidate
    return here / DEFAULT_DIR


def new_root(path: str | os.PathLike[str] | None) -> Path:
    """Where ``init`` creates a lake: ``path``, else $LAKELET_HOME, else ./.lakelet."""
    if path is not None:
        return find_root(path)
    home = os.environ.get("LAKELET_HOME")
    return Path(home).expanduser() if home else Path.cwd() / DEFAULT_DIR


def load(root: Path) -> LakeConfig:
    config_path = root / CONFIG_FILE
    try:
        raw = config_path.read_bytes()
    except FileNotFoundError:
        raise LakeNotFoundError(
            f"no lake at {root}: create one with `lakelet init {root}` (or lakelet.init() in Python)",
            path=str(root),
        ) from None
    except NotADirectoryError:
        raise LakeNotFoundError(
            f"no lake at {_file_in(root) or root}: it is a file, not a lake's folder", path=str(root)
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{config_path} is a directory: a lake's configuration is a file") from None
    except OSError as e:
        raise ConfigError(f"cannot read {config_path}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config_path} is not valid TOML: {e}") from None
    lake = data.get("lake", {})
    if not isinstance(lake, dict):
        raise ConfigError(f"{config_path}: [lake] must be a table")
    layout = lake.get("format", 1)
    if not isinstance(layout, int) or isinstance(layout, bool):
        raise ConfigError(f"{config_path}: format must be an integer, not {layout!r}")
    if layout > LAYOUT_FORMAT:
        raise ConfigError(
            f"{config_path} has format {layout}, newer than this lakelet "
            f"understands ({LAYOUT_FORMAT}): upgrade lakelet"
        )
    remote = lake.get("remote") or None
    if remote is not None and not isinstance(remote, str):
        raise ConfigError(f"{config_path}: remote must be a URL (a string), not {remote!r}")
    options = data.get("storage_options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{config_path}: [storage_options] must be a table")
    upload = lake.get("upload", "write-through")
    if upload not in UPLOAD_MODES:
        raise ConfigError(f"{config_path}: upload must be one of {', '.join(UPLOAD_MODES)}, not {upload!r}")
    transfers = lake.get("transfers", 16)
    if not isinstance(transfers, int) or transfers < 1:
        raise ConfigError(f"{config_path}: transfers must be a positive integer, not {transfers!r}")
    secrets = data.get("secrets", {})
    if not isinstance(secrets, dict):
        raise ConfigError(f"{config_path}: [secrets] must be a table")
    return LakeConfig(root.resolve(), remote, options, upload, transfers, secrets, layout)


def write_new(root: Path, remote: str | None, storage_options: dict[str, Any] | None = None) -> None:
    """Create ``lakelet.toml`` at ``root``; a lake that exists already is left alone.
    Raises InvalidArgumentError when ``root`` is (or is under) a file, StorageError when the
    folder cannot be written."""
    if (afile := _file_in(root)) is not None:
        raise InvalidArgumentError(f"cannot create a lake at {root}: {afile} is a file, not a folder")
    try:
        _write_new(root, remote, storage_options)
    except OSError as e:
        raise StorageError(f"cannot create a lake at {root}: {e.strerror or e}", path=str(root)) from None


def _write_new(root: Path, remote: str | None, storage_options: dict[str, Any] | None) -> None:
    lines = ["# lakelet lake configuration", "[lake]", f"format = {LAYOUT_FORMAT}"]
    if remote:
        lines.append(f"remote = {json.dumps(remote)}")
        lines.append('upload = "write-through"  # or "deferred": `lakelet push` uploads')
    if storage_options:
        lines += ["", "# passed to the remote's fsspec filesystem"]
        lines += _toml_table("storage_options", storage_options)
    tmp_dir = root / "tmp"  # where fsck removes the temp file of an init that was killed
    make_dirs(tmp_dir)
    with contextlib.suppress(FileExistsError):  # never overwrite an existing lake's config
        publish_file(root / CONFIG_FILE, ("\n".join(lines) + "\n").encode(), tmp_dir, point="config-written")


def _file_in(root: Path) -> Path | None:
    """``root`` or the nearest of its parents that exists, if that is not a folder."""
    for path in (root, *root.parents):
        if path.exists() or path.is_symlink():
            return None if path.is_dir() else path
    return None


_TABLE_HEADER = re.compile(r"\s*\[")
_LAKE_HEADER = re.compile(r"\s*\[\s*lake\s*\]\s*(#.*)?$")
_FORMAT_LINE = re.compile(r"(\s*(?:format|\"format\"|'format')\s*=\s*)[0-9]+")


def raise_format(root: Path) -> None:
    """Record ``format = LAYOUT_FORMAT`` in ``root``'s lakelet.toml if it records an older one.

    Only that line changes (a hand-edited file keeps its comments and order), and the file is
    replaced whole (temp, fsync, rename). Raises ConfigError when the file is laid out so that
    the edit would change anything else.
    """
    path = root / CONFIG_FILE
    with open(path, encoding="utf-8", newline="") as f:  # newline="": CRLF files stay CRLF
        text = f.read()
    data = tomllib.loads(text)
    lake = data.get("lake", {})
    if lake.get("format", 1) >= LAYOUT_FORMAT:
        return
    edited = _with_format(text, LAYOUT_FORMAT)
    try:
        faithful = tomllib.loads(edited) == {**data, "lake": {**lake, "format": LAYOUT_FORMAT}}
    except tomllib.TOMLDecodeError:
        faithful = False
    if not faithful:
        raise ConfigError(
            f"{path} records format {lake.get('format', 1)} and cannot be updated automatically: "
            f"set `format = {LAYOUT_FORMAT}` under [lake] in it"
        )
    tmp = root / "tmp" / f"{os.getpid()}-{_secrets.token_hex(4)}.tmp"  # fsck removes it if we die
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(edited)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(root)


def _with_format(text: str, layout: int) -> str:
    """``text`` with the format line of its [lake] table set to ``layout``: in place, else added
    under the table's header, else in a [lake] table added at the end."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not _LAKE_HEADER.match(line):
            continue
        for j in range(i + 1, len(lines)):
            if _TABLE_HEADER.match(lines[j]):
                break
            if m := _FORMAT_LINE.match(lines[j]):
                lines[j] = f"{m.group(1)}{layout}{lines[j][m.end() :]}"
                return "".join(lines)
        lines.insert(i + 1, f"format = {layout}\n")
        return "".join(lines)
    if text and not text.endswith("\n"):
        text += "\n"
    return f"{text}[lake]\nformat = {layout}\n"


def _toml_table(name: str, table: dict[str, Any]) -> list[str]:
    # JSON scalars are valid TOML scalars; nested dicts become sub-tables.
    lines = [f"[{name}]"]
    nested = []
    for key, value in table.items():
        if isinstance(value, dict):
            nested += ["", *_toml_table(f"{name}.{key}", value)]
        else:
            lines.append(f"{json.dumps(str(key))} = {json.dumps(value)}")
    return lines + nested


def progress_delay(default: float) -> float:
    """Seconds of work before a progress bar appears: $LAKELET_PROGRESS_DELAY (tests set 0),
    else ``default``."""
    try:
        return float(os.environ.get("LAKELET_PROGRESS_DELAY", default))
    except ValueError:
        return default


def current_user() -> str:
    """$LAKELET_USER, else git's user.email, else $USER@host: one path segment, since it names
    folders (``scopes/user/<user>``, ``secrets/user/<user>``). Raises InvalidNameError."""
    user = os.environ.get("LAKELET_USER")
    # Checked on every call, with the rule of `--scope user/<user>`: a user of '../org' would
    # otherwise write the org's secrets, or another scope's names.
    if user:
        return _checked_user(user, "LAKELET_USER")
    return _checked_user(_default_user(), "the user (git's user.email, else $USER@host; set LAKELET_USER)")


def _checked_user(user: str, source: str) -> str:
    problem = segment_problem(user)
    if problem:
        raise InvalidNameError(f"invalid user {user!r} from {source}: {problem}", name=user)
    return user


# git's answer for user.email, asked ahead (``ask_user_ahead``), and the folder it was asked in
_asked: tuple[subprocess.Popen[str], str] | None = None


def ask_user_ahead() -> None:
    """Start asking git for user.email in the background, unless $LAKELET_USER says who, or
    the answer is known: ``stage`` does it when a function is decorated, so that the first
    call, which records its user, does not wait for a git process (~8 ms)."""
    global _asked
    if _asked is not None or os.environ.get("LAKELET_USER") or _default_user.cache_info().currsize:
        return
    try:
        proc = subprocess.Popen(
            ["git", "config", "user.email"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
    except OSError:
        return
    _asked = (proc, os.getcwd())


def _git_email() -> str:
    global _asked
    asked, _asked = _asked, None
    if asked is not None:
        proc, folder = asked
        try:
            out: str | None = proc.communicate(timeout=5)[0]
        except subprocess.SubprocessError:
            proc.kill()
            proc.wait()
            out = None
        if out is not None and folder == os.getcwd():  # else a repository's own config may differ
            return out.strip() if proc.returncode == 0 else ""
    try:
        return subprocess.run(
            ["git", "config", "user.email"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


@cache
def _default_user() -> str:
    email = _git_email()
    if email:
        return email
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"{name}@{socket.gethostname()}"
