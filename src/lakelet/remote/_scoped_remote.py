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
from pathlib import Path

from lakelet.core._streams import Reader
from lakelet.core.errors import IntegrityError
from lakelet.remote._remote import Remote
from lakelet.storage._refs import NameRecord

__all__ = ["RemoteScope"]


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
        raw = self.remote.read_bytes(self._record_key(name))
        return NameRecord.from_json(raw) if raw is not None else None

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
        base = f"{self._base}/records/"
        keys = self.remote.find(base + prefix)
        return sorted(k.removeprefix(base).removesuffix(".json") for k in keys if k.endswith(".json"))

    def delete(self, names: list[str]) -> None:
        for name in names:  # the record first: nobody is sent to bytes that are going away
            self.remote.remove(self._record_key(name))
            self.remote.remove(self._file(name))

    def delete_all(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.remote.remove_tree(self._base)

    def url(self, name: str, expires_s: int) -> str:
        return self.remote.url_of(self._file(name), expires_s)
