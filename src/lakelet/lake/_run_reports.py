"""Run reports: one ``runs/<run id>.json`` per ``lakelet.run``, here and on the remote.

Any machine sharing the remote writes them, so a report read back is parsed by
``parse_report`` before anyone sees it: its run id is the one in its key, its times are
times, its lists are lists of stage ids, each stage's entry has a known status. A report
that fails (or is larger than ``MAX_RUN_REPORT_BYTES``) is left out of the listing and
reported in one warning on the ``lakelet.records`` logger; the others are listed.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from lakelet.core._display import Pretty
from lakelet.core._names import validate_segment
from lakelet.core.errors import CorruptRecordError
from lakelet.lake import _json_checks as check
from lakelet.lake._display import report_card
from lakelet.lake._mirror import MirroredFiles

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["MAX_RUN_REPORT_BYTES", "STATUSES", "SavedReport", "list_reports", "parse_report", "save_report"]

MAX_RUN_REPORT_BYTES = 16 << 20  # some 50,000 stages
STATUSES = ("ran", "skipped", "failed", "not run")  # runner._events.StageStatus
_LISTS = {"ran": "ran", "skipped": "skipped", "failed": "failed", "not_run": "not run"}  # field: status
_FAILURE_TEXT = 1 << 20  # characters of a stage's ``why`` (a failure's last line, or why it ran)
_logger = logging.getLogger("lakelet.records")


class SavedReport(dict[str, Any]):
    """A run report read back: its checked fields, as a plain dict (``json.dumps`` takes it),
    that a notebook shows as a card (``_repr_html_``, and IPython's text form)."""

    def _repr_html_(self) -> str:
        return report_card(self).html()

    def _repr_pretty_(self, p: Pretty, cycle: bool) -> None:
        report_card(self).pretty(p, cycle)


def save_report(context: LakeContext, run_id: str, report: dict[str, Any]) -> None:
    """Raises InvalidNameError for a run id that is not one path segment."""
    validate_segment(run_id, "run id")  # it names a file, here and on the remote
    body = json.dumps(report, indent=1).encode()
    # here first: the report of work done on this machine is kept even if the remote is down
    MirroredFiles(context).replace(f"runs/{run_id}.json", body, point="run-report-written", local_first=True)


def list_reports(context: LakeContext) -> list[dict[str, Any]]:
    """Every run report that passes the checks, oldest first; each other one is reported in one
    warning and left out."""
    files = MirroredFiles(context)
    reports: list[dict[str, Any]] = []  # SavedReport each: a notebook shows it
    for key in files.keys("runs/", ".json"):
        data = files.read(key, prefer_local=True, limit=MAX_RUN_REPORT_BYTES)
        if data is None:  # removed since it was listed
            continue
        try:
            reports.append(SavedReport(parse_report(data, key)))
        except CorruptRecordError as e:
            _logger.warning("%s; left out", e)
    return sorted(reports, key=lambda r: r["started_at"])


def parse_report(data: bytes, key: str) -> dict[str, Any]:
    """The run report stored under ``key`` (``runs/<run id>.json``), with its checked fields only;
    raises CorruptRecordError."""
    try:
        return _parse(check.load_json(data, MAX_RUN_REPORT_BYTES, "run report"), key)
    except check.Invalid as e:
        raise CorruptRecordError(
            f"run report {check.shown(key)} is invalid: {e} (damaged, or written by a buggy or hostile peer)",
            record=key,
        ) from None


def _parse(value: object, key: str) -> dict[str, Any]:
    body = check.obj(value, "the report")
    run_id = check.segment(body.get("run_id"), "run id")
    if key != f"runs/{run_id}.json":
        raise check.Invalid(f"it is the report of run {check.shown(run_id)}, stored under another key")
    report: dict[str, Any] = {
        "run_id": run_id,
        "started_at": body.get("started_at"),
        "ended_at": body.get("ended_at"),
    }
    check.timestamp(report["started_at"], "started_at")
    check.timestamp(report["ended_at"], "ended_at")
    stages = check.obj(body.get("stages", {}), "stages")
    for stage, entry in stages.items():
        _entry(stage, entry)
    for field, status in _LISTS.items():
        listed = body.get(field, [])  # not_run came later: older reports lack it
        if not isinstance(listed, list):
            raise check.Invalid(f"{field} is not a list: {check.shown(listed)}")
        for stage in listed:
            check.line(stage, field)
            if stage not in stages or stages[stage]["status"] != status:
                raise check.Invalid(f"{field} lists {check.shown(stage)}, whose entry says otherwise")
        report[field] = listed
    report["stages"] = stages
    return report


def _entry(stage: str, value: object) -> None:
    where = f"stages[{check.shown(stage)}]"
    check.line(stage, where)
    entry = check.obj(value, where)
    if set(entry) - {"status", "duration_s", "why", "key"}:
        raise check.Invalid(f"{where} has unknown fields {check.shown(sorted(set(entry)))}")
    if entry.get("status") not in STATUSES:
        raise check.Invalid(f"{where}.status is unknown: {check.shown(entry.get('status'))}")
    if entry.get("duration_s") is not None:
        check.number(entry["duration_s"], f"{where}.duration_s")
    check.text(entry.get("why"), f"{where}.why", _FAILURE_TEXT)
    if "key" in entry:
        check.hex_text(entry["key"], f"{where}.key", 64)
