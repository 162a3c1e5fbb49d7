"""Validation of names and the single path segments (users, run ids) that scope them.

Every name is checked here before it reaches a path, a key or the index, so
inner code can assume a name is safe to join under a root. A name comes back in
Unicode NFC: 'café' typed on a keyboard (NFC) and 'café' from a macOS file name (NFD)
look the same and are one name.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any

from lakelet.core.errors import InvalidNameError

__all__ = [
    "MAX_NAME_BYTES",
    "check_names",
    "name_key",
    "segment_problem",
    "validate_name",
    "validate_path_name",
    "validate_prefix",
    "validate_segment",
]

MAX_NAME_BYTES = 1024
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_MAX_SEGMENT_BYTES = 255
# What ``_problem`` refuses, as one RE2 pattern (pyarrow.compute) over a column of names: a name
# it does not match, of at most MAX_NAME_BYTES, passes ``validate_name``; a name it matches goes
# to ``validate_name``, for its message. tests/test_names.py holds the two to the same answer,
# on every kind of bad name and on random ones: change both together.
_PROBLEM_PATTERN = r"^$|[\x00-\x1f\x7f\\]|^/|//|/$|(^|/)\.\.?(/|$)"


def _problem(name: str) -> str | None:
    if not isinstance(name, str):
        return "a name must be a string"
    if name == "":
        return "a name cannot be empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"a name is at most {MAX_NAME_BYTES} bytes"
    if _CONTROL.search(name):
        return "a name cannot contain NUL or control characters"
    if "\\" in name:
        return "a name uses '/' as separator, not '\\'"
    if name.startswith("/"):
        return "a name cannot be an absolute path"
    for segment in name.split("/"):
        if segment == "":
            return "a name cannot have empty segments ('//' or a trailing '/')"
        if segment in (".", ".."):
            return "a name cannot have '.' or '..' segments"
    return None


def validate_name(name: str) -> str:
    """Return ``name`` in Unicode NFC if it is a valid lake name; raise InvalidNameError
    otherwise. Callers go on with what it returns: that is the name."""
    problem = _problem(name)
    if problem:
        raise InvalidNameError(f"invalid name {name!r}: {problem}", name=name)
    return name if name.isascii() else unicodedata.normalize("NFC", name)


def check_names(column: Any) -> None:
    """Raise ``validate_name``'s InvalidNameError for the first name in ``column`` (a pyarrow
    string array or chunked array, no nulls) that is not a valid name. Column-wise: a snapshot
    holds millions, at ~0.1 us a name where ``validate_name`` takes ~2 us."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        column.validate(full=True)  # Parquet holds bytes: the pattern would read past bad UTF-8
    except pa.ArrowInvalid:
        raise InvalidNameError("invalid name: it is not UTF-8 text") from None
    flagged = pc.or_(
        pc.match_substring_regex(column, _PROBLEM_PATTERN),
        pc.greater(pc.binary_length(column), MAX_NAME_BYTES),
    )
    for i in pc.indices_nonzero(flagged).to_pylist():
        validate_name(column[i].as_py())


def validate_path_name(name: str, what: str) -> str:
    """A name that becomes a folder path as it is (datasets, pipeline state): each segment must
    also fit a local file system's 255-byte limit."""
    name = validate_name(name)
    if any(len(segment.encode()) > _MAX_SEGMENT_BYTES for segment in name.split("/")):
        raise InvalidNameError(
            f"invalid {what} {name!r}: a segment is at most {_MAX_SEGMENT_BYTES} bytes", name=name
        )
    return name


def validate_prefix(prefix: str) -> str:
    """A listing prefix (empty, or a name optionally ending in '/'), in NFC as names are."""
    if prefix == "":
        return prefix
    if prefix.endswith("/"):
        return validate_name(prefix[:-1]) + "/"
    return validate_name(prefix)


def validate_segment(value: str, what: str) -> str:
    """A single path segment such as a user or a run id."""
    problem = segment_problem(value)
    if problem:
        raise InvalidNameError(f"invalid {what} {value!r}: {problem}", name=value)
    return value


def segment_problem(value: str) -> str | None:
    """Why ``value`` cannot be a single path segment (``validate_segment``), or None."""
    problem = _problem(value)
    if problem is None and not _is_utf8(value):
        # what os.environ makes of undecodable bytes (surrogateescape): no record can hold it
        problem = "it must be valid UTF-8 text"
    if problem is None and "/" in value:
        problem = "it must be a single segment without '/'"
    if problem is None and len(value.encode()) > _MAX_SEGMENT_BYTES:
        problem = f"it is at most {_MAX_SEGMENT_BYTES} bytes"
    return problem


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def name_key(name: str) -> str:
    """The fixed-length key a name is stored under on disk and on remotes.

    Hashing the name keeps every name a valid file name (no 255-byte segment
    limit, no clash between `a` as a file and `a/b`) on every store.
    """
    return hashlib.sha256(name.encode("utf-8")).hexdigest()
