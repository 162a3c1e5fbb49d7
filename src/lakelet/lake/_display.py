"""A run report in a notebook: when the run started and how long it took, what it ran, and
each stage's status and reason — failures first, since they are what one looks for.

A report may come from any machine sharing the remote: its stage ids and reasons are
anyone's text, shown only through ``Card``, which escapes them. The card holds no link.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lakelet.core._display import Card

__all__ = ["report_card"]

_MAX_STAGES = 50  # a report of 50,000 stages is a listing (`lakelet runs --json`), not a glance
_COUNTED = ("ran", "skipped", "failed", "not run")  # as `lakelet run` sums a run up
_ORDER = {"failed": 0, "not run": 1, "ran": 2, "skipped": 3}  # the rows: what went wrong first
_KEY_SHOWN = 12  # hex digits of a run record's key: enough to tell runs apart by eye


def report_card(report: Mapping[str, Any]) -> Card:
    """The card of ``report``: a saved report's fields (``runs/<id>.json``, or a ``RunReport``'s)."""
    stages: Mapping[str, Mapping[str, Any]] = report.get("stages") or {}
    card = Card(f"lakelet run {report.get('run_id', '')}")
    card.row("started", _when(report.get("started_at")))
    card.row("duration", _duration(report.get("started_at"), report.get("ended_at")))
    counts = dict.fromkeys(_COUNTED, 0)
    for entry in stages.values():
        counts[entry.get("status", "")] = counts.get(entry.get("status", ""), 0) + 1
    card.row("stages", ", ".join(f"{n:,} {status}" for status, n in counts.items()))
    shown = sorted(stages.items(), key=lambda item: _ORDER.get(item[1].get("status", ""), len(_ORDER)))
    rows = [
        [stage, e.get("status", ""), _seconds(e.get("duration_s")), e.get("why", ""), _key(e.get("key"))]
        for stage, e in shown[:_MAX_STAGES]
    ]
    if len(shown) > _MAX_STAGES:
        rows.append([f"… and {len(shown) - _MAX_STAGES:,} more", "", "", "", ""])
    return card.table("each stage", ["stage", "status", "duration", "why", "run record"], rows)


def _when(value: object) -> str:
    return f"{value[:19].replace('T', ' ')} UTC" if isinstance(value, str) else ""


def _duration(started: object, ended: object) -> str:
    if not isinstance(started, str) or not isinstance(ended, str) or not ended:
        return "still running" if isinstance(started, str) else ""
    try:
        seconds = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
    except ValueError:  # the parser checked both; a RunReport being built may hold anything
        return ""
    return _seconds(seconds)


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) and not isinstance(value, bool) else ""


def _key(value: object) -> str:
    return f"{value[:_KEY_SHOWN]}…" if isinstance(value, str) and len(value) > _KEY_SHOWN else ""
