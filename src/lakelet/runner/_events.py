"""What a run tells its observer, and the report it ends with.

``lakelet.run(..., observer=o)`` calls, in this order and on the thread that called ``run``:
``o.started(RunStarted)`` once its plan is made; ``o.stage_finished(StageFinished)`` for each
stage found cached; then ``o.stage_started(StageStarted)`` and ``o.stage_finished(StageFinished)``
for each stage it runs (a stage's upstream stages finish before it starts; independent stages
interleave); ``o.stage_finished`` with status ``"not run"`` for the descendants of a failure; and
``o.finished(RunReport)`` last, once the report is saved, also before a ``RunError`` is raised.
The library itself never prints: without an observer a run is silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from lakelet.core._display import Pretty
from lakelet.lake._display import report_card

if TYPE_CHECKING:
    from lakelet.runner._graph import StageGraph

__all__ = ["RunObserver", "RunReport", "RunStarted", "StageFinished", "StageStarted", "StageStatus"]

# "not run": a descendant of a stage that failed
StageStatus = Literal["ran", "skipped", "failed", "not run"]


@dataclass
class RunReport:
    """What one run did, saved as ``runs/<run_id>.json`` (``lakelet runs`` lists them)."""

    run_id: str
    started_at: str
    ended_at: str = ""
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)  # descendants of a failure
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> status, duration_s, why, key

    def _repr_html_(self) -> str:
        return report_card(self.__dict__).html()

    def _repr_pretty_(self, p: Pretty, cycle: bool) -> None:
        report_card(self.__dict__).pretty(p, cycle)


@dataclass(frozen=True)
class RunStarted:
    """A run's plan: its graph, and the stages it will run (the others are cached, or only cached
    stages need them)."""

    run_id: str
    started_at: str  # ISO 8601, UTC
    graph: StageGraph
    to_run: tuple[str, ...]  # node ids, in graph order


@dataclass(frozen=True)
class StageStarted:
    """A stage handed to the executor: in process it runs now; a pool may queue it for a free worker."""

    stage: str  # node id


@dataclass(frozen=True)
class StageFinished:
    """A stage done with, as its entry in the run report says."""

    stage: str  # node id
    status: StageStatus
    duration_s: float | None  # for a stage that ran
    why: str  # why it ran, "cached", the error's last line, or which failure stopped it
    key: str | None = None  # the key of its run record, for one that ran or was skipped


class RunObserver(Protocol):
    """Told what a run does (see the module docstring for the order). Subclass it and override the
    methods you need (the others do nothing), or write any class with these four methods."""

    def started(self, run: RunStarted) -> None:
        return None

    def stage_started(self, event: StageStarted) -> None:
        return None

    def stage_finished(self, event: StageFinished) -> None:
        return None

    def finished(self, report: RunReport) -> None:
        return None
