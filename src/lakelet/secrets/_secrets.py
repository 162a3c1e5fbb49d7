"""Secrets: named values for stages, encrypted at rest, never listed, logged, keyed or traced.

Two backends, chosen under ``[secrets]`` in ``lakelet.toml``:

- ``local`` (default): AES-256-GCM (``cryptography``) files under
  ``<lake>/secrets/{user/<user>,org}/<NAME>.json``, with the secret's name,
  scope and user as associated data (a file moved to another name or user does
  not decrypt). The key lives outside the lake: ``LAKELET_SECRET_KEY``
  (base64), else the OS keyring if the ``keyring`` package has a backend,
  else a 0600 file ``$XDG_CONFIG_HOME/lakelet/secret.key``.
- ``aws-ssm``: SecureString parameters ``<path>/user/<user>/<NAME>`` and
  ``<path>/org/<NAME>`` in AWS Systems Manager Parameter Store, through the
  standard AWS credential chain (``AWS_ENDPOINT_URL`` honoured).

A user's secret shadows the org secret of the same name.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import logging
import os
import re
import secrets as _random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from lakelet.core import _config
from lakelet.core._durable import publish_file
from lakelet.core._names import validate_segment
from lakelet.core.errors import (
    ConfigError,
    CorruptRecordError,
    InvalidNameError,
    LakeletError,
    NotFoundError,
    SecretError,
)

__all__ = [
    "Backend",
    "LocalBackend",
    "SecretInfo",
    "Secrets",
    "SsmBackend",
    "validate_secret_name",
]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_KEYRING_SERVICE = "lakelet"
_log = logging.getLogger("lakelet.secrets")


@dataclass(frozen=True)
class SecretInfo:
    """What a listing shows of a secret: never its value."""

    name: str
    scope: str  # "user" or "org"
    set_at: str
    set_by: str


def validate_secret_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidNameError(
            f"invalid secret name {name!r}: use letters, digits and '_' (an environment variable name)",
            name=name,
        )
    return name


class Backend(Protocol):
    def put(self, scope: str, user: str, name: str, value: str) -> None: ...
    def fetch(self, scope: str, user: str, name: str) -> str | None: ...
    def remove(self, scope: str, user: str, name: str) -> bool: ...
    def infos(self, scope: str, user: str) -> list[SecretInfo]: ...


def _key() -> bytes:
    env = os.environ.get("LAKELET_SECRET_KEY")
    if env:
        try:
            key = base64.b64decode(env, validate=True)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError("LAKELET_SECRET_KEY must be 32 bytes in base64 (`openssl rand -base64 32`)")
        return key
    with contextlib.suppress(Exception):  # no keyring package, or no usable backend
        import keyring

        stored = keyring.get_password(_KEYRING_SERVICE, "secret-key")
        if stored is None:
            stored = base64.b64encode(_random.token_bytes(32)).decode()
            keyring.set_password(_KEYRING_SERVICE, "secret-key", stored)
        return base64.b64decode(stored)
    return _key_file()


def _key_file() -> bytes:
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "lakelet"
    path = home / "secret.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = base64.b64encode(_random.token_bytes(32))
        # Created once: two processes creating the key at once agree on one. Durable before
        # anything is sealed with it: a key lost or emptied by a power cut would make every
        # secret sealed with it unreadable.
        with contextlib.suppress(FileExistsError):
            publish_file(path, key, home, mode=0o600, point="secret-key-written")
    return base64.b64decode(path.read_bytes())


class LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root / "secrets"
        self._tmp = root / "tmp"

    def _path(self, scope: str, user: str, name: str) -> Path:
        # Both become path segments here, whoever the caller: checked again, so that no
        # user or name can reach another folder (a user of '../org' is the org's folder).
        validate_secret_name(name)
        folder = "org" if scope == "org" else f"user/{validate_segment(user, 'user')}"
        return self.root / folder / f"{name}.json"

    @staticmethod
    def _aad(scope: str, user: str, name: str) -> bytes:
        return f"{scope}\0{user if scope == 'user' else ''}\0{name}".encode()

    def put(self, scope: str, user: str, name: str, value: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = _random.token_bytes(12)
        sealed = AESGCM(_key()).encrypt(nonce, value.encode(), self._aad(scope, user, name))
        record = {
            "nonce": base64.b64encode(nonce).decode(),
            "sealed": base64.b64encode(sealed).decode(),
            "set_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "set_by": user,
        }
        path = self._path(scope, user, name)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        publish_file(
            path, json.dumps(record).encode(), self._tmp, replace=True, mode=0o600, point="secret-written"
        )

    def fetch(self, scope: str, user: str, name: str) -> str | None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            nonce, sealed, _, _ = _parse_secret_file(self._path(scope, user, name))
        except FileNotFoundError:
            return None
        try:
            plain = AESGCM(_key()).decrypt(nonce, sealed, self._aad(scope, user, name))
        except InvalidTag:
            raise SecretError(
                f"cannot decrypt {scope} secret {name!r}: it was encrypted with another key "
                "(check LAKELET_SECRET_KEY, the keyring or ~/.config/lakelet/secret.key)"
            ) from None
        return plain.decode()

    def remove(self, scope: str, user: str, name: str) -> bool:
        try:
            self._path(scope, user, name).unlink()
        except FileNotFoundError:
            return False
        return True

    def infos(self, scope: str, user: str) -> list[SecretInfo]:
        folder = self._path(scope, user, "x").parent
        out = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                _, _, set_at, set_by = _parse_secret_file(path)
            except CorruptRecordError as e:  # the others stay listed
                _log.warning("%s", e)
                continue
            out.append(SecretInfo(path.stem, scope, set_at, set_by))
        return out


def _parse_secret_file(path: Path) -> tuple[bytes, bytes, str, str]:
    """The one parser of a local secret file (``LocalBackend.put``): nonce, sealed value, set_at,
    set_by. Raises CorruptRecordError naming the file if it is not one."""
    try:
        record = json.loads(path.read_bytes())
        if not isinstance(record, dict):
            raise TypeError(type(record).__name__)
        nonce = base64.b64decode(record["nonce"], validate=True)
        sealed = base64.b64decode(record["sealed"], validate=True)
        set_at, set_by = record["set_at"], record["set_by"]
        if not isinstance(set_at, str) or not isinstance(set_by, str) or len(nonce) != 12:
            raise TypeError("set_at, set_by or nonce")
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError and binascii.Error are ValueErrors
        raise CorruptRecordError(
            f"secret file {path} is damaged ({type(e).__name__}: {e}): set the secret again",
            record=str(path),
        ) from None
    return nonce, sealed, " ".join(set_at.split()), " ".join(set_by.split())


class SsmBackend:
    def __init__(self, path: str, options: dict[str, Any]) -> None:
        try:
            import boto3
        except ImportError:
            raise ConfigError("the aws-ssm secrets backend needs boto3: pip install 'lakelet[aws]'") from None
        self.prefix = "/" + path.strip("/")
        self.client = boto3.client("ssm", **options)

    def _param(self, scope: str, user: str, name: str) -> str:
        if scope == "org":
            return f"{self.prefix}/org/{name}"
        return f"{self.prefix}/user/{_ssm_segment(user)}/{name}"

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except LakeletError:
            raise
        except Exception as e:  # botocore's errors, connection errors
            raise SecretError(
                f"AWS Parameter Store: {doing} failed: {type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}"
            ) from None

    def put(self, scope: str, user: str, name: str, value: str) -> None:
        with self._errors(f"storing {name}"):
            self.client.put_parameter(
                Name=self._param(scope, user, name),
                Value=value,
                Type="SecureString",
                Overwrite=True,
                Description=f"lakelet secret, set by {user}",
            )

    def fetch(self, scope: str, user: str, name: str) -> str | None:
        with self._errors(f"reading {name}"):
            try:
                got = self.client.get_parameter(Name=self._param(scope, user, name), WithDecryption=True)
            except self.client.exceptions.ParameterNotFound:
                return None
        return str(got["Parameter"]["Value"])

    def remove(self, scope: str, user: str, name: str) -> bool:
        with self._errors(f"deleting {name}"):
            try:
                self.client.delete_parameter(Name=self._param(scope, user, name))
            except self.client.exceptions.ParameterNotFound:
                return False
        return True

    def infos(self, scope: str, user: str) -> list[SecretInfo]:
        folder = self._param(scope, user, "x").rsplit("/", 1)[0]
        out = []
        with self._errors("listing"):
            pages = self.client.get_paginator("describe_parameters").paginate(
                ParameterFilters=[{"Key": "Path", "Option": "OneLevel", "Values": [folder]}]
            )
            for page in pages:
                for p in page["Parameters"]:
                    by = (p.get("Description") or "").removeprefix("lakelet secret, set by ")
                    out.append(
                        SecretInfo(
                            p["Name"].rsplit("/", 1)[-1],
                            scope,
                            p["LastModifiedDate"].isoformat(timespec="seconds"),
                            by,
                        )
                    )
        return sorted(out, key=lambda i: i.name)


def _ssm_segment(text: str) -> str:
    """A user as a Parameter Store path segment (letters, digits, '.', '-' only; '_' escapes),
    one-to-one so two users never share a folder: tester@example.com → tester_40example.com."""
    return "".join(c if c.isascii() and (c.isalnum() or c in ".-") else f"_{ord(c):02x}" for c in text)


class Secrets:
    """``lake.secrets``: set, list and delete; values only ever reach stages."""

    def __init__(self, config: _config.LakeConfig) -> None:
        self._root = config.root
        settings = config.secrets
        kind = settings.get("backend", "local")
        if kind == "local":
            self._backend: Backend = LocalBackend(config.root)
        elif kind == "aws-ssm":
            options = {k: v for k, v in settings.items() if k in ("region_name", "endpoint_url")}
            self._backend = SsmBackend(str(settings.get("path") or f"/lakelet/{config.root.name}"), options)
        else:
            raise ConfigError(f"unknown secrets backend {kind!r}: use 'local' or 'aws-ssm'")

    def __repr__(self) -> str:
        return f"<Secrets of {self._root}>"

    def set(self, name: str, value: str, org: bool = False) -> None:
        validate_secret_name(name)
        if not isinstance(value, str) or not value:
            raise InvalidNameError(f"the value of secret {name!r} must be a non-empty string")
        self._backend.put("org" if org else "user", _config.current_user(), name, value)

    def list(self) -> list[SecretInfo]:
        user = _config.current_user()
        mine = self._backend.infos("user", user)
        shadowed = {i.name for i in mine}
        return sorted(
            [*mine, *(i for i in self._backend.infos("org", user) if i.name not in shadowed)],
            key=lambda i: i.name,
        )

    def delete(self, name: str, org: bool = False) -> None:
        validate_secret_name(name)
        if not self._backend.remove("org" if org else "user", _config.current_user(), name):
            raise NotFoundError(f"no {'org' if org else 'user'} secret {name!r}", name=name)

    def values(self, names: builtins.list[str]) -> dict[str, str]:  # list: the method above
        """The values of ``names`` for a stage: the user's, else the org's."""
        user = _config.current_user()
        out = {}
        for name in names:
            validate_secret_name(name)
            value = self._backend.fetch("user", user, name)
            if value is None:
                value = self._backend.fetch("org", user, name)
            if value is None:
                raise NotFoundError(f"no secret {name!r} for {user}: `lakelet secrets set {name}`", name=name)
            out[name] = value
        return out
