"""Scopes: where each kind of name keeps its records and its bytes.

``lake`` names are write-once and share one content-addressed object store.
``user/<user>`` and ``pipeline/<run>`` names are mutable scratch space; each
scope lives in its own directory (``scopes/<kind>/<id>/``, and under the same
prefix on a remote, so bucket policies can restrict it), with one blob per
name, so deleting a name or archiving a run frees its bytes at once without
reference counting.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from lakelet.core import _config
from lakelet.core._digest import Digest
from lakelet.core._names import name_key, validate_segment
from lakelet.core.errors import InvalidNameError
from lakelet.storage._objects import ObjectStore
from lakelet.storage._refs import RefStore

__all__ = ["LAKE", "SCOPE_KINDS", "ScopeLayout", "parse_scope", "scope_id"]

LAKE = "lake"
SCOPE_KINDS = ("user", "pipeline")


def scope_id(kind: str, ident: str) -> str:
    if kind not in SCOPE_KINDS:
        raise InvalidNameError(f"unknown scope kind {kind!r}: use one of {', '.join(SCOPE_KINDS)}")
    what = "user" if kind == "user" else "run id"
    return f"{kind}/{validate_segment(ident, what)}"


def parse_scope(scope: str) -> str:
    """Validate a scope string: 'lake', 'user/<user>' or 'pipeline/<run id>'."""
    if scope == LAKE:
        return scope
    kind, sep, ident = scope.partition("/")
    if not sep:
        raise InvalidNameError(f"invalid scope {scope!r}: use 'lake', 'user' or 'pipeline/<run id>'")
    return scope_id(kind, ident)


@dataclass(frozen=True)
class ScopeLayout:
    """The directories of one scope under a lake root."""

    scope: str
    directory: Path
    refs: RefStore
    objects: ObjectStore | None  # the shared store, for the lake scope only

    @classmethod
    def of(cls, root: Path, scope: str, tmp_dir: Path) -> ScopeLayout:
        if scope == LAKE:
            # A lakelet older than segments reads a format-1 lake and would not see their
            # names: the lake records format 2 before its first segment exists.
            refs = RefStore(root / "names", tmp_dir, functools.partial(_config.raise_format, root))
            return cls(scope, root, refs, ObjectStore(root / "objects"))
        directory = root / "scopes" / scope
        return cls(scope, directory, RefStore(directory / "names", tmp_dir), None)

    def blob_path(self, name: str, digest: Digest) -> Path:
        if self.objects is not None:
            return self.objects.path(digest)
        key = name_key(name)
        return self.directory / "blobs" / key[:2] / key / f"{digest.algorithm}-{digest.hexdigest}"

    def blob_path_name(self, name: str, digest: Digest) -> str:
        """``blob_path`` as a string: a cached stage call reads two blobs, and a ``Path`` costs
        more to build than reading a small one does."""
        if self.objects is not None:
            return self.objects.path_name(digest)
        return str(self.blob_path(name, digest))
