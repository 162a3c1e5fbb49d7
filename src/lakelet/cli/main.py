"""``lakelet`` subcommands. Each one is a call into the library plus rendering."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table

import lakelet
from lakelet import File, Lake, LakeletError
from lakelet._expiry import parse_duration

from . import _datasets_view
from ._render import DelayedBar, human_size, stderr, stdout


class _Group(click.Group):
    """Turns every expected error into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LakeletError as e:
            stderr.print(f"[red]error:[/red] {e}", markup=True, highlight=False)
            sys.exit(1)
        except KeyboardInterrupt:
            stderr.print("interrupted")
            sys.exit(130)
        except BrokenPipeError:
            sys.exit(1)


def _lake(ctx: click.Context) -> Lake:
    return lakelet.open(ctx.obj.get("lake"))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--lake", "lake_path", metavar="PATH", envvar=None,
    help="The lake root (default: $LAKELET_HOME, the nearest lakelet.toml, ./.lakelet).",
)
@click.version_option(lakelet.__version__, prog_name="lakelet")
@click.pass_context
def cli(ctx: click.Context, lake_path: str | None) -> None:
    """lakelet: a local-first data lake for Python pipelines."""
    ctx.obj = {"lake": lake_path}


@cli.command()
@click.argument("path", required=False)
@click.option("--remote", metavar="URL", help="An object store URL to share the lake through.")
def init(path: str | None, remote: str | None) -> None:
    """Create a lake at PATH (default ./.lakelet)."""
    lake = lakelet.init(path, remote=remote)
    stdout.print(f"lake ready at {lake.root}", highlight=False)


def _file_json(f: File) -> dict[str, Any]:
    r = f.record
    return {
        "name": r.name, "scope": r.scope, "digest": r.digest, "size": r.size,
        "created_at": r.created_at, "creator": r.creator, "local": f.is_local, "state": f.state,
        "meta": r.meta,
    }


@cli.command()
@click.argument("prefix", default="")
@click.option("--scope", default="lake", show_default=True,
              help="'lake', 'user' or 'pipeline/<run id>'.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def ls(ctx: click.Context, prefix: str, scope: str, as_json: bool) -> None:
    """List names starting with PREFIX."""
    lake = _lake(ctx)
    files = lake.ls(prefix, scope=scope)
    if as_json:
        click.echo(json.dumps([_file_json(f) for f in files], indent=2))
    elif not files:
        stderr.print(f"no names under {prefix!r}" if prefix else "the lake is empty")
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("name", "size", "created", "creator", "state"):
            table.add_column(column, justify="right" if column == "size" else "left")
        for f in files:
            table.add_row(f.name, human_size(f.size), f.record.created_at[:19].replace("T", " "),
                          f.creator, _STATE_STYLE[f.state])
        stdout.print(table)
    _warn_out_of_sync(lake)


_STATE_STYLE = {
    "local": "local", "remote": "[cyan]remote[/cyan]", "unpushed": "[yellow]unpushed[/yellow]",
}


def _warn_out_of_sync(lake: Lake) -> None:
    status = lake.status()
    if status["remote"] is None:
        return
    if status["unpushed"]:
        stderr.print(f"[yellow]warning:[/yellow] {status['unpushed']} names are not on "
                     f"{status['remote']} yet: run `lakelet push`", highlight=False)
    last = status["last_sync"]
    if last is None:
        stderr.print(f"[yellow]warning:[/yellow] never synced with {status['remote']}: names bound "
                     "elsewhere are not listed; run `lakelet sync`", highlight=False)
    elif isinstance(last, datetime) and datetime.now(UTC) - last > timedelta(days=1):
        stderr.print(f"[yellow]warning:[/yellow] last sync with {status['remote']} was "
                     f"{last:%Y-%m-%d %H:%M} UTC: run `lakelet sync`", highlight=False)


@cli.command()
@click.argument("src")
@click.argument("name")
@click.option("--copy/--move", "copy", default=True, help="Copy SRC (default) or move it into the lake.")
@click.pass_context
def add(ctx: click.Context, src: str, name: str, copy: bool) -> None:
    """Add SRC (a file, directory, URL or fsspec URL) to the lake as NAME."""
    lake = _lake(ctx)
    with DelayedBar(f"adding {name}") as bar:
        result = lake.add(src, name, move=not copy, progress=bar)
    files = result if isinstance(result, list) else [result]
    total = sum(f.size for f in files)
    what = files[0].name if len(files) == 1 else f"{len(files)} files under {name}/"
    stdout.print(f"added {what} ({human_size(total)})", highlight=False)


@cli.command()
@click.argument("name")
@click.option("--scope", default="lake", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def info(ctx: click.Context, name: str, scope: str, as_json: bool) -> None:
    """Size, digest, creation, creator, scope and location of NAME (for datasets/<name>: its
    version, files and column statistics)."""
    lake = _lake(ctx)
    if scope == "lake" and name.startswith("datasets/") and not lake.exists(name):
        _datasets_view.dataset_info(lake, name.removeprefix("datasets/"), as_json)
        return
    f = lake.file(name, scope)
    data = _file_json(f)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("name", f.name), ("scope", f.scope), ("digest", f.digest),
        ("size", f"{human_size(f.size)} ({f.size} bytes)"), ("created", f.record.created_at),
        ("creator", f.creator),
        ("where", f"local ({f.path})" if f.is_local else "missing locally"),
    ]
    rows += [(k, str(v)) for k, v in sorted(f.meta.items())]
    for key, value in rows:
        table.add_row(key, value)
    stdout.print(table, highlight=False)


@cli.command()
@click.argument("name")
@click.option("--scope", default="lake", show_default=True)
@click.pass_context
def cat(ctx: click.Context, name: str, scope: str) -> None:
    """Write the content of NAME to stdout."""
    f = _lake(ctx).file(name, scope)
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
    f = _lake(ctx).file(name, scope)
    target = dest / name.rsplit("/", 1)[-1] if dest.is_dir() else dest
    if not target.parent.is_dir():
        raise lakelet.NotFoundError(f"directory {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.lakelet-tmp")
    with DelayedBar(f"exporting {name}") as bar, f.open("rb") as src, open(tmp, "wb") as out:
        bar.add_total(f.size)
        while chunk := src.read(1 << 20):
            out.write(chunk)
            bar.advance(len(chunk))
    tmp.replace(target)
    stdout.print(f"wrote {target}", highlight=False)


@cli.command()
@click.argument("name")
@click.option("--scope", default="lake", show_default=True)
@click.option("--recursive", "-r", is_flag=True, help="Also remove every name under NAME/.")
@click.option("--force", is_flag=True, help="Remove a write-once lake name (its lineage is kept).")
@click.pass_context
def rm(ctx: click.Context, name: str, scope: str, recursive: bool, force: bool) -> None:
    """Remove a scoped name, or a lake name with --force."""
    _lake(ctx).rm(name, force=force, scope=scope, recursive=recursive)
    stdout.print(f"removed {name}", highlight=False)


@cli.command()
@click.argument("name")
@click.option("--upstream/--downstream", default=True,
              help="Walk what NAME was made from (default), or list what was made from it.")
@click.option("--depth", type=click.IntRange(min=1), default=None, help="How many steps to walk.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "dot", "mermaid"]), default="text",
              show_default=True)
@click.pass_context
def lineage(ctx: click.Context, name: str, upstream: bool, depth: int | None, fmt: str) -> None:
    """Inputs → creation method → outputs of NAME, with the code URL and versions."""
    from lakelet._lineage import downstream as derived
    from lakelet._lineage import upstream as ancestors

    from . import _lineage_view as view

    lake = _lake(ctx)
    _ = lake.file(name).digest  # NotFoundError first, as one line
    if not upstream:
        files = derived(lake, name, depth)
        if fmt == "json":
            click.echo(json.dumps([{"name": f.name, "digest": f.digest} for f in files], indent=2))
        else:
            for f in files:
                stdout.print(f.name, highlight=False)
            if not files:
                stderr.print(f"nothing in this lake was made from {name}")
        return
    records = ancestors(lake, name, depth)
    if fmt == "json":
        click.echo(json.dumps(records, indent=2, sort_keys=True))
    elif fmt == "dot":
        click.echo(view.as_dot(lake, records))
    elif fmt == "mermaid":
        click.echo(view.as_mermaid(lake, records))
    else:
        stdout.print(view.as_text(lake, records))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def datasets(ctx: click.Context, as_json: bool) -> None:
    """List datasets with their version, rows, size and last write."""
    _datasets_view.list_datasets(_lake(ctx), as_json)


@cli.command()
@click.argument("pipeline", type=click.Path(path_type=Path))
@click.pass_context
def ingest(ctx: click.Context, pipeline: Path) -> None:
    """Run the Singer tap of PIPELINE.yaml into partitioned Parquet datasets, incrementally."""
    from lakelet._singer import run

    log = run(_lake(ctx), pipeline)
    rows = ", ".join(f"{stream}: {n:,}" for stream, n in log["rows"].items()) or "no streams"
    stdout.print(f"ingested {rows} rows ({log['files_written']} files)", highlight=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def runs(ctx: click.Context, as_json: bool) -> None:
    """Pipeline runs: id, start, duration, stages run / skipped / failed."""
    from lakelet._run import list_runs

    found = list_runs(_lake(ctx))
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("run", "started", "duration", "ran", "skipped", "failed"):
        table.add_column(column, justify="left" if column in ("run", "started") else "right")
    for r in found:
        start, end = datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["ended_at"])
        table.add_row(r["run_id"], r["started_at"][:19].replace("T", " "),
                      f"{(end - start).total_seconds():.1f} s", str(len(r["ran"])), str(len(r["skipped"])),
                      str(len(r["failed"])))
    stdout.print(table, highlight=False)


@cli.command()
@click.option("--ttl", default="7d", show_default=True, help="Pipeline runs older than this go.")
@click.option("--dry-run", is_flag=True, help="Only list what would go.")
@click.option("--remote", "on_remote", is_flag=True,
              help="Also delete unreferenced objects on the remote (older than a day).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def gc(ctx: click.Context, ttl: str, dry_run: bool, on_remote: bool, as_json: bool) -> None:
    """Drop expired pipeline runs, stage outputs whose ttl= has passed and that nothing live
    read, and objects older than a day that no name refers to."""
    from lakelet._gc import collect

    report = collect(_lake(ctx), parse_duration(ttl, "--ttl"), dry_run=dry_run, remote=on_remote)
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    stdout.print(f"{verb} {len(report.runs)} pipeline runs, {len(report.objects)} local objects, "
                 f"{len(report.remote_objects)} remote objects ({human_size(report.bytes)}); "
                 f"{len(report.stage_runs)} expired stage runs ({len(report.stage_outputs)} outputs)",
                 highlight=False)
    for run_id in report.runs:
        stdout.print(f"  run {run_id}", highlight=False)
    for name in [*report.stage_runs, *report.stage_outputs]:
        stdout.print(f"  {name}", highlight=False)
    for digest in [*report.objects, *report.remote_objects]:
        stdout.print(f"  {digest}", highlight=False)
    for name, why in report.kept.items():
        stderr.print(f"kept expired {name}: {why}", highlight=False)


@cli.group()
def secrets() -> None:
    """Named values for stages: set (from a hidden prompt or stdin), list, rm."""


@secrets.command("set")
@click.argument("name")
@click.option("--org", is_flag=True, help="An org-level secret (a user's own secret of the same name wins).")
@click.pass_context
def secrets_set(ctx: click.Context, name: str, org: bool) -> None:
    """Set NAME; the value is read from a hidden prompt, or from stdin when it is not a terminal."""
    if sys.stdin.isatty():
        value = click.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True, err=True)
    else:
        value = sys.stdin.read().rstrip("\n")
    _lake(ctx).secrets.set(name, value, org=org)
    stdout.print(f"set {'org' if org else 'user'} secret {name}", highlight=False)


@secrets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def secrets_list(ctx: click.Context, as_json: bool) -> None:
    """Names, scope, when and by whom: never values."""
    infos = _lake(ctx).secrets.list()
    if as_json:
        click.echo(json.dumps([i.__dict__ for i in infos], indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("name", "scope", "set at", "set by"):
        table.add_column(column)
    for i in infos:
        table.add_row(i.name, i.scope, i.set_at, i.set_by)
    stdout.print(table, highlight=False)


@secrets.command("rm")
@click.argument("name")
@click.option("--org", is_flag=True, help="Remove the org-level secret.")
@click.pass_context
def secrets_rm(ctx: click.Context, name: str, org: bool) -> None:
    """Delete secret NAME."""
    _lake(ctx).secrets.delete(name, org=org)
    stdout.print(f"removed {'org' if org else 'user'} secret {name}", highlight=False)


@cli.command()
@click.pass_context
def push(ctx: click.Context) -> None:
    """Send names bound here but not yet on the remote."""
    with DelayedBar("pushing") as bar:
        report = _lake(ctx).push(progress=bar)
    stdout.print(f"pushed {report.names} names, {report.objects} objects "
                 f"({human_size(report.bytes)})", highlight=False)
    _fail_on_conflicts(report.conflicts)


def _fail_on_conflicts(conflicts: list[str]) -> None:
    if conflicts:
        shown = ", ".join(conflicts[:5]) + (f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        stderr.print(f"[red]error:[/red] bound elsewhere to other content, kept local-only: {shown}",
                     highlight=False)
        sys.exit(1)


@cli.command()
@click.pass_context
def sync(ctx: click.Context) -> None:
    """Push pending names, then learn the names bound elsewhere (content is fetched lazily)."""
    with DelayedBar("pushing") as bar:
        report = _lake(ctx).sync(progress=bar)
    stdout.print(f"pushed {report.pushed.names} names; {report.new_names} records from "
                 f"{report.entries_read} new log entries", highlight=False)
    _fail_on_conflicts(report.pushed.conflicts)


@cli.command()
@click.argument("prefix", default="")
@click.pass_context
def pull(ctx: click.Context, prefix: str) -> None:
    """Sync, then download the content of every name under PREFIX."""
    with DelayedBar("pulling") as bar:
        files = _lake(ctx).pull(prefix=prefix, progress=bar)
    stdout.print(f"{len(files)} files under {prefix or 'the lake'} are local", highlight=False)


@cli.command()
@click.argument("prefix", default="")
@click.pass_context
def evict(ctx: click.Context, prefix: str) -> None:
    """Free local space: drop local copies under PREFIX that are safely on the remote."""
    report = _lake(ctx).evict(prefix)
    stdout.print(f"evicted {report.files} files ({human_size(report.bytes)})", highlight=False)
    if report.kept_unpushed:
        stderr.print(f"kept {len(report.kept_unpushed)} files that are not on the remote: "
                     "run `lakelet push` first", highlight=False)


@cli.command()
@click.argument("name")
@click.option("--expires", default="1h", show_default=True, help="Lifetime of a presigned URL: 30m, 1h, 7d.")
@click.pass_context
def url(ctx: click.Context, name: str, expires: str) -> None:
    """A URL another tool can read NAME from (presigned on cloud stores)."""
    seconds = parse_duration(expires, "--expires").total_seconds()
    click.echo(_lake(ctx).url(name, expires=max(1, int(seconds))))


@cli.command()
@click.pass_context
def fsck(ctx: click.Context) -> None:
    """Verify every stored object against its digest and rebuild the local index."""
    lake = _lake(ctx)
    with DelayedBar("verifying") as bar:
        report = lake.fsck(progress=bar)
    stdout.print(
        f"checked {report.objects_checked} objects, indexed {report.names_indexed} names",
        highlight=False,
    )
    for digest in report.corrupt:
        stderr.print(f"corrupt: {digest} (moved to quarantine/)", highlight=False)
    for name in report.missing:
        stderr.print(f"missing content: {name}", highlight=False)
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback requires the token.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token", default=None, help="Token every request must carry (made up when --host is not "
                                            "loopback and none is given).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, token: str | None, open_browser: bool) -> None:
    """Serve a read-only web page on the lake: names, lineage graph, datasets, runs."""
    from lakelet.ui import serve

    def announce(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()  # the URL must show now, also through a pipe, while the server runs on

    serve(_lake(ctx), host, port, token, open_browser, announce=announce)


def main() -> None:
    cli(prog_name="lakelet")
