"""``lakelet ingest PIPELINE.yaml``: a Singer tap's streams into Delta tables (docs/ingest.md).

The YAML is DataSpoc Pipe's, read unchanged, with lakelet's additions:

    name: orders-pipeline            # optional: the state and log name (default: the file's stem)
    source:
      tap: tap-postgres              # an executable on PATH or beside this Python
      config: tap-config.json        # relative to the YAML file
      streams: [public-orders]       # DataSpoc's list of streams (tap_stream_id or stream name)
      select:                        # lakelet's: the same, optionally with a replication key
        - {stream: public-customers, replication_key: updated_at}
    destination:
      bucket: s3://team-bucket       # must hold this lake's remote: refused otherwise
      path: raw                      # datasets land at <path>/<source>/<stream>
      partition_by: [dt]             # dt = the extraction date
      compression: zstd
    incremental: true                # DataSpoc's switch (or {enabled: true}): resume from the bookmark

The tap runs as a subprocess; its RECORD messages are buffered per stream into
Arrow IPC files on disk (memory stays bounded), and only after the tap exits
cleanly is each stream committed as a new dataset version and the last STATE
kept as the bookmark passed to the next run. A stream whose SCHEMA names
``key_properties`` is merged on them (the row at the ``>=`` bookmark, or a whole
file a tap sends again, replaces its earlier copy instead of doubling it); any
other stream is appended (replaced, on a full extraction). A tap that fails
commits nothing and keeps the previous bookmark.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from lakelet.core._names import validate_name, validate_segment
from lakelet.core._progress import SILENT, Progress, begin_phase
from lakelet.core.errors import ConfigError, SourceError
from lakelet.datasets._datasets import Datasets
from lakelet.datasets._state import State, write_run_log

if TYPE_CHECKING:
    from lakelet.lake._context import LakeContext

__all__ = ["run"]

_FLUSH_ROWS = 50_000


def _load_spec(path: Path) -> dict[str, Any]:
    import yaml

    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no pipeline file {path}") from None
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("source"), dict):
        raise ConfigError(f"{path}: a pipeline needs a 'source:' mapping with 'tap:' and 'config:'")
    source = spec["source"]
    for key in ("tap", "config"):
        if not isinstance(source.get(key), str):
            raise ConfigError(f"{path}: source.{key} is required (a string)")
    for key in ("select", "streams"):
        if not isinstance(source.get(key, []), list):
            raise ConfigError(f"{path}: source.{key} must be a list of streams")
    destination = spec.get("destination") or {}
    if not isinstance(destination, dict):
        raise ConfigError(f"{path}: destination must be a mapping (bucket, path, compression)")
    if "bucket" in destination and not isinstance(destination["bucket"], str):
        raise ConfigError(f"{path}: destination.bucket must be a URL such as s3://bucket")
    return spec


def _incremental(spec: dict[str, Any], path: Path) -> bool:
    """DataSpoc's ``incremental``: true or false, or a mapping with ``enabled``; default true."""
    value = spec.get("incremental", True)
    if isinstance(value, dict):
        value = value.get("enabled", True)
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: incremental must be true or false (or {{enabled: …}})")
    return value


def _check_bucket(context: LakeContext, bucket: str | None, path: Path) -> None:
    """DataSpoc writes to ``destination.bucket``; lakelet writes to the lake's remote. A bucket
    that holds the remote is honoured (the tables land there); any other is refused."""
    if bucket is None:
        return
    syncer = context.syncer()
    remote = syncer.remote.url if syncer is not None else None
    wanted = bucket.rstrip("/")
    if remote is not None and (remote == wanted or remote.startswith(wanted + "/")):
        return
    where = f"its remote {remote}" if remote else f"{context.root} (it has no remote)"
    raise ConfigError(
        f"{path}: destination.bucket {bucket} is not where this lake keeps its datasets ({where}): "
        f"run the pipeline in a lake whose remote is in {bucket} (lakelet init --remote {wanted}/<prefix>), "
        "or remove destination.bucket"
    )


def _tap_command(tap: str) -> str:
    found = shutil.which(tap) or shutil.which(tap, path=str(Path(sys.executable).parent))
    if found is None:
        raise ConfigError(
            f"unknown tap {tap!r}: no such executable on PATH (pip install it, e.g. "
            f"meltanolabs-{tap} for {tap})"
        )
    return found


def _arrow_type(schema: dict[str, Any]) -> pa.DataType:
    types = schema.get("type", ["string"])
    types = [types] if isinstance(types, str) else list(types)
    kind = next((t for t in types if t != "null"), "string")
    if kind == "integer":
        return pa.int64()
    if kind == "number":
        return pa.float64()
    if kind == "boolean":
        return pa.bool_()
    if kind == "string" and schema.get("format") == "date-time":
        return pa.timestamp("us", tz="UTC")
    if kind == "string" and schema.get("format") == "date":
        return pa.date32()
    return pa.string()  # strings, and objects/arrays as JSON text


class _StreamBuffer:
    """The records of one stream, spilled to an Arrow IPC file every ``_FLUSH_ROWS`` rows."""

    def __init__(self, stream: str, json_schema: dict[str, Any], keys: Any, tmp: Path) -> None:
        properties = json_schema.get("properties", {})
        self.columns = list(properties)
        if not isinstance(keys, list) or not all(isinstance(k, str) and k in properties for k in keys):
            raise SourceError(f"stream {stream!r}: key_properties {keys!r} are not columns of its SCHEMA")
        self.keys: list[str] = keys
        self.types = {c: _arrow_type(properties[c]) for c in self.columns}
        self.schema = pa.schema(
            [pa.field(c, self.types[c]) for c in self.columns] + [pa.field("dt", pa.string())]
        )
        self.path = tmp / f"{os.getpid()}-singer-{secrets.token_hex(6)}.arrows"
        self._sink = pa.OSFile(str(self.path), "wb")
        self._writer = pa.ipc.new_stream(self._sink, self.schema)
        self._rows: list[dict[str, Any]] = []
        self._days: list[str] = []
        self.count = 0

    def add(self, record: dict[str, Any], extracted: str | None) -> None:
        self._rows.append(record)
        self._days.append((extracted or datetime.now(UTC).isoformat())[:10])
        self.count += 1
        if len(self._rows) >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        arrays = []
        for column in self.columns:
            values = [r.get(column) for r in self._rows]
            if self.types[column] == pa.string():
                values = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
                arrays.append(pa.array(values, pa.string()))
            elif pa.types.is_timestamp(self.types[column]) or pa.types.is_date(self.types[column]):
                arrays.append(pa.array(values, pa.string()).cast(self.types[column]))
            else:
                arrays.append(pa.array(values, self.types[column]))
        arrays.append(pa.array(self._days, pa.string()))
        self._writer.write_batch(pa.record_batch(arrays, schema=self.schema))
        self._rows, self._days = [], []

    def close(self) -> pa.RecordBatchReader:
        self.flush()
        self._writer.close()
        self._sink.close()
        return pa.ipc.open_stream(pa.memory_map(str(self.path)))

    def last_per_key(self) -> pa.Table:
        """The buffered rows, only the last one sent for each key (a tap may send a row again
        within one run, updated)."""
        table = self.close().read_all()
        rows = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
        last = rows.group_by(self.keys).aggregate([("__row", "max")]).column("__row_max")
        return table.take(last.take(pc.sort_indices(last)))  # in the order the tap sent them

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
            self._sink.close()
        self.path.unlink(missing_ok=True)


def _select(catalog: dict[str, Any], select: list[Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Mark the wanted streams selected (incremental when a replication key is given)."""
    wanted: dict[str, str | None] = {}
    for item in select:
        if isinstance(item, str):
            wanted[item] = None
        elif isinstance(item, dict) and isinstance(item.get("stream"), str):
            wanted[item["stream"]] = item.get("replication_key")
        else:
            raise ConfigError(f"source.select: {item!r} is neither a stream name nor {{stream: …}}")
    keys: dict[str, str] = {}
    found = set()
    for stream in catalog.get("streams", []):
        ids = {stream.get("tap_stream_id"), stream.get("stream")}
        match = next((w for w in wanted if w in ids), None) if wanted else stream.get("tap_stream_id")
        for entry in stream.get("metadata", []):
            if entry.get("breadcrumb") == []:
                entry["metadata"]["selected"] = match is not None
                if match is not None and wanted.get(match):
                    entry["metadata"]["replication-method"] = "INCREMENTAL"
                    entry["metadata"]["replication-key"] = wanted[match]
        if match is not None:
            found.add(match)
            key = wanted.get(match)
            if key:
                stream["replication_method"] = "INCREMENTAL"
                stream["replication_key"] = key
                keys[stream["tap_stream_id"]] = key
    missing = set(wanted) - found
    if missing:
        raise ConfigError(f"the tap has no stream {sorted(missing)[0]!r}")
    return catalog, keys


def run(
    context: LakeContext, pipeline_file: str | os.PathLike[str], progress: Progress = SILENT
) -> dict[str, Any]:
    path = Path(pipeline_file)
    spec = _load_spec(path)
    source, destination = spec["source"], spec.get("destination") or {}
    name = validate_segment(str(spec.get("name") or path.stem), "pipeline name")
    tap = _tap_command(source["tap"])
    source_name = str(source.get("name") or source["tap"].removeprefix("tap-"))
    validate_segment(source_name, "source name")
    _check_bucket(context, destination.get("bucket"), path)
    incremental = _incremental(spec, path)
    base = validate_name(str(destination.get("path", "raw")))
    partition_by = list(destination.get("partition_by", ["dt"]))
    compression = str(destination.get("compression", "zstd"))
    config = (path.parent / source["config"]).resolve()
    if not config.is_file():
        raise ConfigError(f"{path}: tap config {config} does not exist")

    started = datetime.now(UTC)
    work = context.tmp / f"{os.getpid()}-ingest-{secrets.token_hex(6)}"
    work.mkdir(parents=True)
    buffers: dict[str, _StreamBuffer] = {}
    try:
        discovered = _run_tap([tap, "--config", str(config), "--discover"], source["tap"])
        selected = list(source.get("streams", [])) + list(source.get("select", []))
        catalog, keys = _select(json.loads(discovered), selected)
        (work / "catalog.json").write_text(json.dumps(catalog))
        command = [tap, "--config", str(config), "--catalog", str(work / "catalog.json")]
        state = State(context, name)
        datasets = Datasets(context)
        previous = state.get() if incremental else {}
        if previous:
            (work / "state.json").write_text(json.dumps(previous))
            command += ["--state", str(work / "state.json")]
        last_state = _stream_tap(command, source["tap"], buffers, work, previous, keys)
        files = 0
        rows = {}
        lineage = {"pipeline": name, "tap": source["tap"]}  # in each commit's commitInfo
        for stream, buffer in buffers.items():
            rows[stream] = buffer.count
            if buffer.count == 0:
                buffer.discard()
                continue
            dataset = f"{base}/{source_name}/{stream}"
            begin_phase(progress, "writing")  # each stream's bytes from zero, not one running sum
            if buffer.keys:
                written = datasets.write(
                    dataset,
                    buffer.last_per_key(),
                    list(partition_by),
                    mode="merge",
                    compression=compression,
                    lineage={**lineage, "stream": stream},
                    keys=buffer.keys,
                    progress=progress,
                )
            else:
                mode = "append" if incremental else "overwrite"
                written = datasets.write(
                    dataset,
                    buffer.close(),
                    list(partition_by),
                    mode,
                    compression,
                    lineage={**lineage, "stream": stream},
                    progress=progress,
                )
            files += written.commit_info["write"]["files"]
        if last_state is not None:
            state.set(last_state)
    except BaseException as e:
        for buffer in buffers.values():
            buffer.discard()
        write_run_log(
            context,
            name,
            {
                "pipeline": name,
                "started_at": started.isoformat(),
                "ended_at": datetime.now(UTC).isoformat(),
                "ok": False,
                "error": f"{type(e).__name__}: {e}",
            },
        )
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log = {
        "pipeline": name,
        "started_at": started.isoformat(),
        "ended_at": datetime.now(UTC).isoformat(),
        "ok": True,
        "rows": rows,
        "files_written": files,
        "state": last_state,
    }
    write_run_log(context, name, log)
    return log


def _run_tap(command: list[str], tap: str) -> str:
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SourceError(f"{tap} {command[-1]} failed (exit {out.returncode}): {_last_line(out.stderr)}")
    return out.stdout


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no error output"


def _stream_tap(
    command: list[str],
    tap: str,
    buffers: dict[str, _StreamBuffer],
    work: Path,
    previous: dict[str, Any],
    keys: dict[str, str],
) -> dict[str, Any] | None:
    """Run the tap, buffer its records per stream; returns its last STATE (None: none sent)."""
    stderr_tail: deque[str] = deque(maxlen=20)
    bookmarks = (previous or {}).get("bookmarks", {})
    last_state = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        drain = threading.Thread(target=stderr_tail.extend, args=(proc.stderr,), daemon=True)
        drain.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.strip():
                continue
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                raise SourceError(f"{tap} wrote a line that is not Singer: {line[:120]!r}") from None
            kind = message.get("type")
            if kind == "SCHEMA" and message["stream"] not in buffers:
                buffers[message["stream"]] = _StreamBuffer(
                    message["stream"], message["schema"], message.get("key_properties") or [], work
                )
            elif kind == "RECORD":
                stream = message["stream"]
                if stream not in buffers:
                    raise SourceError(f"{tap} sent a RECORD for {stream!r} before its SCHEMA")
                key = keys.get(stream)
                done = bookmarks.get(stream, {}).get("replication_key_value")
                # Singer SDK taps resume with >= on the bookmark: the bookmarked row comes again
                if key is not None and done is not None and message["record"].get(key) == done:
                    continue
                buffers[stream].add(message["record"], message.get("time_extracted"))
            elif kind == "STATE":
                last_state = message.get("value")
        code = proc.wait()
        drain.join(timeout=10)
    if code != 0:
        raise SourceError(
            f"{tap} failed (exit {code}): {_last_line(''.join(stderr_tail))}; "
            "nothing was committed and the previous state is kept"
        )
    return last_state
