"""What ``lakelet run`` draws while a run goes on: one line, redrawn in place on a terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import lakelet

if TYPE_CHECKING:
    from rich.live import Live
    from rich.text import Text

__all__ = ["RunDisplay"]


class RunDisplay(lakelet.RunObserver):
    """Stages done / running / skipped / failed, on stderr when it is a terminal; silent elsewhere.

    Keeps the report the run ends with (``report``). ``close()`` takes the line away; the run's
    end does too.
    """

    def __init__(self) -> None:
        self.report: lakelet.RunReport | None = None
        self._run_id = ""
        self._total = 0
        self._counts = {"ran": 0, "skipped": 0, "failed": 0, "not run": 0}
        self._running: set[str] = set()
        self._live: Live | None = None

    def started(self, run: lakelet.RunStarted) -> None:
        self._run_id, self._total = run.run_id, len(run.to_run)
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(
                self._render(), console=Console(stderr=True), transient=True, refresh_per_second=8
            )
            self._live.start()

    def stage_started(self, event: lakelet.StageStarted) -> None:
        self._running.add(event.stage)
        self._update()

    def stage_finished(self, event: lakelet.StageFinished) -> None:
        self._running.discard(event.stage)
        self._counts[event.status] += 1
        self._update()

    def finished(self, report: lakelet.RunReport) -> None:
        self.report = report
        self.close()

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _update(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Text:
        from rich.text import Text

        c = self._counts
        running = ", ".join(sorted(n.rsplit(".", 1)[-1] for n in self._running)) or "-"
        return Text(
            f"run {self._run_id}: {c['ran']}/{self._total} done, {c['skipped']} skipped, "
            f"{c['failed']} failed; running: {running}"
        )
