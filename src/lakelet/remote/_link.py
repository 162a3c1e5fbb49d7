"""A lake's link to its remote, and the lake-wide verbs over it: push, sync, evict, status.

The link checks the remote's format on first use, not when the lake opens: an
offline machine keeps reading what it has.
"""

from __future__ import annotations

from pathlib import Path

from lakelet.catalog._catalog import Catalog
from lakelet.core._progress import SILENT, Progress
from lakelet.core.errors import ConfigError
from lakelet.remote._remote import Remote
from lakelet.remote._sync import EvictReport, PushReport, Syncer, SyncReport
from lakelet.storage._objects import ObjectStore
from lakelet.storage._refs import NameRecord
from lakelet.storage._scopes import LAKE

__all__ = ["RemoteLink"]


class RemoteLink:
    """The remote of one lake, or none (an embedded lake)."""

    def __init__(
        self, remote: Remote | None, catalog: Catalog, objects: ObjectStore, tmp: Path, config_file: Path
    ) -> None:
        self._remote = remote
        self._catalog = catalog
        self._objects = objects
        self._tmp = tmp
        self._config_file = config_file
        self._checked: Syncer | None = None

    @property
    def url(self) -> str | None:
        """The remote's URL, or None for an embedded lake."""
        return self._remote.url if self._remote else None

    def syncer(self) -> Syncer | None:
        """The link to the remote once its format is checked; None for an embedded lake."""
        if self._remote is None:
            return None
        if self._checked is None:
            self._remote.check_format(create=False)
            self._checked = Syncer(self._remote, self._catalog, self._objects, self._tmp)
        return self._checked

    def require(self, doing: str) -> Syncer:
        """The checked syncer; raises ConfigError naming ``doing`` for an embedded lake."""
        syncer = self.syncer()
        if syncer is None:
            raise ConfigError(
                f'cannot {doing}: this lake has no remote (set `remote = "s3://…"` under [lake] in '
                f"{self._config_file})"
            )
        return syncer

    def upgrade(self) -> bool:
        """Switch the remote's format marker to the newest format; whether it changed."""
        syncer = self.require("upgrade the remote")
        return syncer.remote.upgrade_format()

    def is_pushed(self, record: NameRecord) -> bool:
        """Whether the remote binds ``record``'s name to the same content (as of the last sync)."""
        return self._catalog.remote_digests(LAKE, record.name).get(record.name) == record.digest

    def push(self, progress: Progress = SILENT) -> PushReport:
        return self._push(self.require("push"), progress)

    def _push(self, syncer: Syncer, progress: Progress) -> PushReport:
        """Push the unpushed names a batch at a time: one log entry per batch."""
        report = PushReport()
        for batch in self._catalog.unpushed_batches(LAKE):
            pushed = syncer.push(batch, progress)
            report.names += pushed.names
            report.objects += pushed.objects
            report.bytes += pushed.bytes
            report.conflicts += pushed.conflicts
        return report

    def sync(self, progress: Progress = SILENT, prefix: str = "") -> SyncReport:
        syncer = self.require("sync")
        reported = len(syncer.problems)
        pushed = self._push(syncer, progress)
        names, entries = syncer.pull_metadata(prefix)
        syncer.maybe_snapshot()
        return SyncReport(pushed, names, entries, syncer.problems[reported:])

    def evict(self, prefix: str) -> EvictReport:
        return self.require("evict").evict(self._catalog.iter_records(LAKE, prefix))

    def status(self) -> dict[str, object]:
        if self._remote is None:
            return {"remote": None, "unpushed": 0, "last_sync": None, "synced_only": None}
        # unchecked: a listing warns from the local catalog and must not wait on the network
        syncer = self._checked or Syncer(self._remote, self._catalog, self._objects, self._tmp)
        return {
            "remote": self._remote.url,
            "unpushed": self._catalog.count_not_on_remote(LAKE),
            "last_sync": syncer.last_sync(),
            "synced_only": self._catalog.partial_prefix(),
        }
