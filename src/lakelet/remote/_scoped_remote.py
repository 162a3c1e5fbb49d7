"""A scoped store's half on the remote: plain files under the scope's own prefix.

``scopes/<kind>/<id>/files/<name>`` holds the bytes under the name itself, so
a bucket policy can restrict a prefix and any tool can read a presigned URL;
``scopes/<kind>/<id>/records/<name>.json`` holds the digest, size and writer.
A put writes the bytes first and the record last, so a record never names
bytes that are not there yet; a reader that finds bytes newer than the record
(a put in flight) re-reads the record once.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from lakelet.core._names import validate_name
from lakelet.core._records import shown
from lakelet.core._streams import Reader
from lakelet.core.errors import CorruptRecordError, IntegrityError, InvalidNameError
from lakelet.remote._remote import Remote
from lakelet.storage._refs import NameRecord

__all__ = ["RemoteScope"]

_log = logging.getLogger("lakelet.remote")


class RemoteScope:
    def __init__(self, remote: Remote, scope: str) -> None:
        self.remote = remote
        self.scope = scope
        self._base = f"scopes/{scope}"

    def _file(self, name: str) -> str:
        return f"{self._base}/files/{name}"

    def _record_key(self, name: str) -> str:
        return f"{self._base}/records/{name}.json"

    def put(self, local_blob: Path, record: NameRecord) -> None:
        self.remote.upload(local_blob, self._file(record.name))
        self.remote.put_bytes(self._record_key(record.name), record.to_json())

    def record(self, name: str) -> NameRecord | None:
        """The record of ``name``, None if there is none. CorruptRecordError if it is not a
        valid record of that name in this scope: any user of the remote can write it, and
        what it says is bound here (a record claiming a lake name would rebind that)."""
        key = self._record_key(name)
        raw = self.remote.read_bytes(key)
        if raw is None:
            return None
        try:
            record = NameRecord.from_json(raw)
        except CorruptRecordError as e:
            raise CorruptRecordError(
                f"remote {self.remote.url}: {key} is not a valid record: {e}", record=key
            ) from None
        if record.scope != self.scope or record.name != name:
            raise CorruptRecordError(
                f"remote {self.remote.url}: {key} holds the record of {record.name!r} in scope "
                f"{record.scope}, not of {name!r} in {self.scope}",
                record=key,
            )
        return record

    def read_range(self, record: NameRecord, begin: int, end: int) -> bytes:
        """Bytes [begin, end) straight from the store: one ranged request, not the whole file.

        A range cannot be checked against the digest of the whole file; its length is."""
        data = self.remote.read_bytes(self._file(record.name), begin, end)
        if data is None or len(data) != end - begin:
            raise IntegrityError(
                f"{record.name!r} in scope {self.scope} on remote {self.remote.url} is shorter "
                f"than its record says ({record.size} bytes)"
            )
        return data

    def open_file(self, name: str) -> Reader:
        return self.remote.open_file(self._file(name))

    def names(self, prefix: str) -> list[str]:
        """The names under ``prefix`` that have a record; a key whose name is not a valid
        name (any user of the remote can write one) is skipped and reported."""
        base = f"{self._base}/records/"
        keys = self.remote.find(base + prefix)
        names = []
        for key in sorted(k for k in keys if k.endswith(".json")):
            try:
                names.append(validate_name(key.removeprefix(base).removesuffix(".json")))
            except InvalidNameError as e:
                _log.warning("remote %s: %s skipped: %s", self.remote.url, shown(key), e)
        return names

    def delete(self, names: list[str]) -> None:
        for name in names:  # the record first: nobody is sent to bytes that are going away
            self.remote.remove(self._record_key(name))
            self.remote.remove(self._file(name))

    def delete_all(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.remote.remove_tree(self._base)

    def url(self, name: str, expires_s: int) -> str:
        return self.remote.url_of(self._file(name), expires_s)
