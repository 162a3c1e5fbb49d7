"""The ``lakelet`` group and its commands on names and datasets; remote, secrets, maintenance, run
and ui commands live in their own modules and are registered here. Each command is a call into the
library plus rendering."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.cells import cell_len
from rich.markup import escape
from rich.text import Span, Text

import lakelet
from lakelet import File, Lake, LakeletError

from . import (
    _datasets_view,
    _maintenance_commands,
    _remote_commands,
    _run_command,
    _secrets_commands,
    _ui_command,
)
from ._context import lake_of
from ._render import DelayedBar, human_size, new_table, show_warnings, stderr, stdout, warn

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Turns every expected error into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LakeletError as e:
            # the message may quote a name or a record's value: text, never markup ("[/red]")
            stderr.print(f"[red]error:[/red] {escape(str(e))}", markup=True, highlight=False)
            sys.exit(1)
        except KeyboardInterrupt:
            stderr.print("interrupted")
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--lake",
    "lake_path",
    metavar="PATH",
    envvar=None,
    help="The lake root (default: $LAKELET_HOME, the nearest lakelet.toml, ./.lakelet).",
)
@click.version_option(lakelet.__version__, prog_name="lakelet")
@click.pass_context
def cli(ctx: click.Context, lake_path: str | None) -> None:
    """lakelet: a local-first data lake for Python pipelines."""
    ctx.obj = {"lake": lake_path}
    show_warnings()


@cli.command()
@click.argument("path", required=False)
@click.option("--remote", metavar="URL", help="An object store URL to share the lake through.")
def init(path: str | None, remote: str | None) -> None:
    """Create a lake at PATH (default ./.lakelet)."""
    lake = lakelet.init(path, remote=remote)
    stdout.print(f"lake ready at {lake.root}", highlight=False)


def _file_json(f: File) -> dict[str, Any]:
    r = f.record
    state = f.state  # (one look at the local copy, not two, for the common states)
    return {
        "name": r.name,
        "scope": r.scope,
        "digest": r.digest,
        "size": r.size,
        "created_at": r.created_at,
        "creator": r.creator,
        "local": state == "local" or (state == "unpushed" and f.is_local),
        "state": state,
        "meta": r.meta,
    }


@cli.command()
@click.argument("prefix", default="")
@click.option("--scope", default="lake", show_default=True, help="'lake', 'user' or 'pipeline/<run id>'.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--all", "show_all", is_flag=True, help="Also the stage outputs and run records under stages/.")
@click.pass_context
def ls(ctx: click.Context, prefix: str, scope: str, as_json: bool, show_all: bool) -> None:
    """List names starting with PREFIX, or matching it if it is a pattern ('raw/**/*.csv':
    * and ? within a segment, ** across segments). The names under stages/ (stage outputs and
    run records) only with --all or a PREFIX under stages/."""
    lake = lake_of(ctx)
    glob = prefix if any(c in prefix for c in "*?[") else None
    hide_stages = not show_all and not prefix.startswith(_STAGES)
    hidden = [0]  # counted as the pages go by
    pages = _pages(lake, "" if glob else prefix, scope, glob, hidden if hide_stages else None)
    if as_json:
        _print_json_array(_file_json(f) for page in pages for f in page)
    else:
        listed = False
        widths = [4, 10, 19, 7]  # name, size, created, creator: at least their headers and the first page
        for page in pages:
            rows = [
                (f.name, human_size(f.size), f.record.created_at[:19].replace("T", " "), f.creator, f.state)
                for f in page
            ]
            widths = [max(w, *(cell_len(row[i]) for row in rows)) for i, w in enumerate(widths)]
            stdout.print(_listing(rows, widths, header=not listed), end="")
            listed = True
        if not listed and not hidden[0]:
            stderr.print(f"no names under {prefix!r}" if prefix else "the lake is empty")
    if hidden[0]:
        stderr.print(
            f"{hidden[0]:,} stage outputs and run records under {_STAGES} not shown: "
            f"`lakelet ls {_STAGES}` or `lakelet ls --all`",
            highlight=False,
        )
    _warn_out_of_sync(lake)


_STAGES = "stages/"

# The first page is short, so that the first screen shows at once; the rest stream in
# bigger pages (each one query of the index, and one table: rich lays a table out whole).
_FIRST_PAGE, _PAGE = 100, 2000


def _pages(
    lake: Lake, prefix: str, scope: str, glob: str | None, hidden: list[int] | None
) -> Iterator[list[File]]:
    """The listing of ``prefix`` (or ``glob``), a page at a time (``Lake.ls`` with ``limit`` and
    ``after``); with ``hidden``, the names under stages/ are left out and counted in it (a
    10,000-item map binds 20,000 names there: the names people chose would drown)."""
    limit, after = _FIRST_PAGE, ""
    while page := lake.ls(prefix, scope=scope, glob=glob, limit=limit, after=after):
        full, last = len(page) == limit, page[-1].name
        if hidden is not None:
            kept = [f for f in page if not f.name.startswith(_STAGES)]
            hidden[0] += len(page) - len(kept)
            page = kept
        if page:
            yield page
        if not full:
            return
        limit, after = _PAGE, last


def _print_json_array(items: Iterable[dict[str, Any]]) -> None:
    """A JSON array printed an item at a time, one item a line (``grep`` finds a name's
    whole entry). Not ``indent=2``: that is json's pure-Python encoder, ~80 us an item, most of
    `lakelet ls --json` over 100,000 names."""
    first = True
    for item in items:
        click.echo(("[\n  " if first else ",\n  ") + _ITEM_JSON.encode(item), nl=False)
        first = False
    click.echo("[]" if first else "\n]")


_ITEM_JSON = json.JSONEncoder(separators=(", ", ": "))


_STATE_STYLE = {"local": "", "remote": "cyan", "unpushed": "yellow"}
_LISTING_HEADER = ("name", "size", "created", "creator", "state")


def _listing(rows: list[tuple[str, str, str, str, str]], widths: list[int], header: bool) -> Text:
    """A page of `lakelet ls` as aligned columns (sizes to the right), the state coloured.
    One Text, not a rich Table: a table lays out and measures every cell (~0.1 ms a row, a
    minute for 100,000 names); this is a string a row."""
    lines = [_columns(_LISTING_HEADER, widths)] if header else []
    spans = [Span(0, len(lines[0]), "bold")] if header else []
    at = len(lines[0]) + 1 if header else 0
    for row in rows:
        line = _columns(row, widths)
        if style := _STATE_STYLE.get(row[4]):
            spans.append(Span(at + len(line) - len(row[4]), at + len(line), style))
        lines.append(line)
        at += len(line) + 1
    return Text("\n".join(lines) + "\n", spans=spans)


def _columns(row: tuple[str, ...], widths: list[int]) -> str:
    """The cells of ``row`` padded to ``widths`` (display cells, not characters; the size to
    the right), two spaces apart; the last one as it is."""
    cells = [
        " " * (w - cell_len(v)) + v if i == 1 else v + " " * (w - cell_len(v))
        for i, (v, w) in enumerate(zip(row, widths, strict=False))
    ]
    return "  ".join([*cells, *row[len(widths) :]])


def _warn_out_of_sync(lake: Lake) -> None:
    status = lake.status()
    if status["remote"] is None:
        return
    if status["unpushed"]:
        warn(f"{status['unpushed']} names are not on {status['remote']} yet: run `lakelet push`")
    if status["synced_only"] is not None:
        warn(
            f"synced only the names under {status['synced_only']!r} from {status['remote']}: "
            "run `lakelet sync` to list the others"
        )
    last = status["last_sync"]
    if last is None:
        warn(
            f"never synced with {status['remote']}: names bound elsewhere are not listed; run `lakelet sync`"
        )
    elif isinstance(last, datetime) and datetime.now(UTC) - last > timedelta(days=1):
        warn(f"last sync with {status['remote']} was {last:%Y-%m-%d %H:%M} UTC: run `lakelet sync`")


@cli.command()
@click.argument("src")
@click.argument("name")
@click.option("--copy/--move", "copy", default=True, help="Copy SRC (default) or move it into the lake.")
@click.option(
    "--follow/--no-follow",
    "follow",
    default=True,
    help="Follow symlinks to files inside a directory SRC (default), or leave them out.",
)
@click.option(
    "--meta", "meta_json", metavar="JSON", help='Your own keys for the record, e.g. \'{"run_id": "r1"}\'.'
)
@click.pass_context
def add(ctx: click.Context, src: str, name: str, copy: bool, follow: bool, meta_json: str | None) -> None:
    """Add SRC (a file, directory, URL, fsspec URL, or - for standard input) to the lake as NAME."""
    meta = _parse_meta(meta_json)
    lake = lake_of(ctx)
    with DelayedBar(f"adding {name}") as bar:
        if src == "-":
            result = lake.add(sys.stdin.buffer, name, meta=meta, progress=bar)
        else:
            result = lake.add(src, name, move=not copy, meta=meta, progress=bar, follow_symlinks=follow)
    files = result if isinstance(result, list) else [result]
    total = sum(f.size for f in files)
    what = files[0].name if len(files) == 1 else f"{len(files)} files under {name}/"
    stdout.print(f"added {what} ({human_size(total)})", highlight=False)


def _parse_meta(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise lakelet.InvalidArgumentError(f"--meta is not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise lakelet.InvalidArgumentError('--meta must be a JSON object, e.g. \'{"run_id": "r1"}\'')
    return meta


@cli.command()
@click.argument("name")
@click.option("--scope", default="lake", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def info(ctx: click.Context, name: str, scope: str, as_json: bool) -> None:
    """Size, digest, creation, creator, scope and location of NAME (for datasets/<name>: its
    version, files and column statistics)."""
    lake = lake_of(ctx)
    if scope == "lake" and name.startswith("datasets/") and not lake.exists(name):
        _datasets_view.dataset_info(lake, name.removeprefix("datasets/"), as_json)
        return
    f = lake.file(name, scope)
    data = _file_json(f)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = new_table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("name", f.name),
        ("scope", f.scope),
        ("digest", f.digest),
        ("size", f"{human_size(f.size)} ({f.size} bytes)"),
        ("created", f.record.created_at),
        ("creator", f.creator),
        ("where", f"local ({f.path})" if f.is_local else "missing locally"),
    ]
    rows += [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in sorted(f.meta.items())]
    for key, value in rows:
        table.add_row(key, value)  # the console prints text, never markup: names and meta are anyone's
    stdout.print(table, highlight=False)


@cli.command()
@click.argument("name")
@click.option("--scope", default="lake", show_default=True)
@click.pass_context
def cat(ctx: click.Context, name: str, scope: str) -> None:
    """Write the content of NAME to stdout."""
    f = lake_of(ctx).file(name, scope)
    with f.open("rb") as src:
        shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)
    sys.stdout.buffer.flush()


@cli.command()
@click.argument("name")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--scope", default="lake", show_default=True)
@click.pass_context
def get(ctx: click.Context, name: str, dest: Path, scope: str) -> None:
    """Export NAME to the local path DEST (a directory keeps the name's last segment)."""
    f = lake_of(ctx).file(name, scope)
    with DelayedBar(f"exporting {name}") as bar:
        target = f.export(dest, progress=bar)
    stdout.print(f"wrote {target}", highlight=False)


@cli.command()
@click.argument("name")
@click.option("--scope", default="lake", show_default=True)
@click.option("--recursive", "-r", is_flag=True, help="Also remove every name under NAME/.")
@click.option("--force", is_flag=True, help="Remove a write-once lake name (its lineage is kept).")
@click.pass_context
def rm(ctx: click.Context, name: str, scope: str, recursive: bool, force: bool) -> None:
    """Remove a scoped name, or a lake name with --force."""
    lake_of(ctx).rm(name, force=force, scope=scope, recursive=recursive)
    stdout.print(f"removed {name}", highlight=False)


@cli.command()
@click.argument("name")
@click.option(
    "--upstream/--downstream",
    default=True,
    help="Walk what NAME was made from (default), or list what was made from it.",
)
@click.option("--depth", type=click.IntRange(min=1), default=None, help="How many steps to walk.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "dot", "mermaid"]),
    default="text",
    show_default=True,
)
@click.pass_context
def lineage(ctx: click.Context, name: str, upstream: bool, depth: int | None, fmt: str) -> None:
    """Inputs → creation method → outputs of NAME, with the code URL and versions."""
    from . import _lineage_view as view

    lake = lake_of(ctx)
    _ = lake.file(name).digest  # NotFoundError first, as one line
    if not upstream:
        files = lake.downstream(name, depth)
        if fmt == "json":
            click.echo(json.dumps([{"name": f.name, "digest": f.digest} for f in files], indent=2))
        else:
            for f in files:
                stdout.print(f.name, highlight=False)
            if not files:
                stderr.print(f"nothing in this lake was made from {name}")
        return
    records = lake.lineage(name, depth)
    if fmt == "json":
        click.echo(json.dumps(records, indent=2, sort_keys=True))
    elif fmt == "dot":
        click.echo(view.as_dot(lake, records))
    elif fmt == "mermaid":
        click.echo(view.as_mermaid(lake, records))
    else:
        width = _text_width()
        stdout.print(view.as_text(lake, records, width), width=width, soft_wrap=False)


def _text_width() -> int:
    """A terminal's width; in a pipe, $COLUMNS if it is a number, else unbounded (for grep)."""
    columns = os.environ.get("COLUMNS", "")
    if stdout.is_terminal or not columns.isdigit() or int(columns) < 20:
        return stdout.width
    return int(columns)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def datasets(ctx: click.Context, as_json: bool) -> None:
    """List datasets with their version, rows, size and last write."""
    _datasets_view.list_datasets(lake_of(ctx), as_json)


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.pass_context
def ingest(ctx: click.Context, pipeline: Path) -> None:
    """Run the Singer tap of PIPELINE.yaml into partitioned Parquet datasets, incrementally."""
    with DelayedBar(f"ingesting {pipeline.name}") as bar:
        log = lake_of(ctx).ingest(pipeline, progress=bar)
    rows = ", ".join(f"{stream}: {n:,}" for stream, n in log["rows"].items()) or "no streams"
    stdout.print(f"ingested {rows} rows ({log['files_written']} files)", highlight=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def runs(ctx: click.Context, as_json: bool) -> None:
    """Pipeline runs: id, start, duration, stages run / skipped / failed."""
    found = lake_of(ctx).runs()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    table = new_table(box=None, pad_edge=False)
    for column in ("run", "started", "duration", "ran", "skipped", "failed"):
        table.add_column(column, justify="left" if column in ("run", "started") else "right")
    for r in found:
        start, end = datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["ended_at"])
        table.add_row(
            r["run_id"],
            r["started_at"][:19].replace("T", " "),
            f"{(end - start).total_seconds():.1f} s",
            str(len(r["ran"])),
            str(len(r["skipped"])),
            str(len(r["failed"])),
        )
    stdout.print(table, highlight=False)


# the other commands live in modules by concern; registering them here keeps one group
for _command in (
    _remote_commands.push,
    _remote_commands.sync,
    _remote_commands.pull,
    _remote_commands.evict,
    _remote_commands.url,
    _remote_commands.remote,
    _secrets_commands.secrets,
    _maintenance_commands.gc,
    _maintenance_commands.fsck,
    _run_command.run,
    _ui_command.ui,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="lakelet")
