"""Run reports: one ``runs/<run id>.json`` per ``lakelet.run``, here and on the remote."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lakelet.lake._mirror import MirroredFiles

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["list_reports", "save_report"]


def save_report(context: LakeContext, run_id: str, report: dict[str, Any]) -> None:
    body = json.dumps(report, indent=1).encode()
    # here first: the report of work done on this machine is kept even if the remote is down
    MirroredFiles(context).replace(f"runs/{run_id}.json", body, point="run-report-written", local_first=True)


def list_reports(context: LakeContext) -> list[dict[str, Any]]:
    """Every run report, oldest first."""
    files = MirroredFiles(context)
    keys = files.keys("runs/", ".json")
    reports = [json.loads(files.read(key, prefer_local=True) or b"{}") for key in keys]
    return sorted(reports, key=lambda r: r.get("started_at", ""))
