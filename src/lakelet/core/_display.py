"""How lakelet's objects look in a notebook: an HTML card (``_repr_html_``) and the same
facts as indented text (IPython's ``_repr_pretty_``).

Every value shown may be anyone's text — a name, a creator, user meta, a column a peer
wrote — so each one is escaped here, and nothing else builds markup.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["Card", "Pretty", "human_size", "text_value"]

_MAX_TEXT = 200  # a value longer than this is cut: a repr is a glance, not a dump


class Pretty(Protocol):
    """What IPython hands ``_repr_pretty_``."""

    def text(self, text: str) -> None: ...


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def text_value(value: object) -> str:
    """``value`` as one line of text: strings as they are, anything else as JSON; cut."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())  # one line: a newline in a name must not fake a row
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


class Card:
    """A title, key/value rows and tables: rendered as HTML or as text."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, object]] = []
        self.tables: list[tuple[str, Sequence[str], Sequence[Sequence[object]]]] = []

    def row(self, key: str, value: object) -> Card:
        if value is not None and value != "":
            self.rows.append((key, value))
        return self

    def table(self, caption: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> Card:
        if rows:
            self.tables.append((caption, columns, rows))
        return self

    def html(self) -> str:
        e = _escaped
        parts = [f"<div class='lakelet'><b>{e(self.title)}</b>"]
        if self.rows:
            cells = "".join(
                f"<tr><th style='text-align:left'>{e(k)}</th><td style='text-align:left'>{e(v)}</td></tr>"
                for k, v in self.rows
            )
            parts.append(f"<table>{cells}</table>")
        for caption, columns, rows in self.tables:
            head = "".join(f"<th>{e(c)}</th>" for c in columns)
            body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in rows)
            parts.append(f"<details open><summary>{e(caption)}</summary><table>")
            parts.append(f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>")
        parts.append("</div>")
        return "".join(parts)

    def text(self) -> str:
        lines = [self.title]
        width = max((len(k) for k, _ in self.rows), default=0)
        lines += [f"  {k.ljust(width)}  {text_value(v)}" for k, v in self.rows]
        for caption, _columns, rows in self.tables:  # text lists values: the caption says what
            lines.append(f"  {caption}:")
            lines += ["    " + "  ".join(text_value(v) for v in row) for row in rows]
        return "\n".join(lines)

    def pretty(self, p: Pretty, cycle: bool) -> None:
        p.text(self.title if cycle else self.text())


def _escaped(value: Any) -> str:
    return html.escape(text_value(value), quote=True)
