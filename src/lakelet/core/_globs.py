"""Name patterns, as shells and fsspec write them: ``*`` and ``?`` stay within one segment,
``**`` crosses segments, ``[abc]`` is a set of characters."""

from __future__ import annotations

import re

from lakelet.core.errors import InvalidArgumentError

__all__ = ["GLOB_CHARS", "compile_glob", "literal_prefix"]

GLOB_CHARS = frozenset("*?[")
_MAX_PATTERN = 4096


def literal_prefix(pattern: str) -> str:
    """The part of ``pattern`` before its first wildcard: names outside it cannot match,
    so a listing asks the index for that prefix only."""
    cut = min((i for i, c in enumerate(pattern) if c in GLOB_CHARS), default=len(pattern))
    return pattern[:cut]


def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex matching whole names. Raises InvalidArgumentError for a pattern that is not text
    or too long to be a name pattern."""
    if not isinstance(pattern, str) or len(pattern) > _MAX_PATTERN:
        raise InvalidArgumentError(f"a glob is a pattern of at most {_MAX_PATTERN} characters")
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")  # 'raw/**/x' matches raw/x as well as raw/a/b/x
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            chars = re.escape(body[1:] if negate else body).replace("\\-", "-")
            out.append(f"[{'^' if negate else ''}{chars}]")
            i = end + 1
        else:
            out.append(re.escape(c))
            i += 1
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as e:  # a set like [z-a]
        raise InvalidArgumentError(f"glob {pattern!r} is not a valid pattern: {e}") from None
