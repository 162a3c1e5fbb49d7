"""``lakelet push / sync / pull / evict / url``: moving names between this machine and the remote."""

from __future__ import annotations

import sys

import click
from rich.markup import escape

from lakelet import parse_duration

from ._context import lake_of
from ._render import DelayedBar, human_size, stderr, stdout

__all__ = ["evict", "pull", "push", "remote", "sync", "url"]


@click.command()
@click.pass_context
def push(ctx: click.Context) -> None:
    """Send names bound here but not yet on the remote."""
    with DelayedBar("pushing") as bar:
        report = lake_of(ctx).push(progress=bar)
    stdout.print(
        f"pushed {report.names} names, {report.objects} objects ({human_size(report.bytes)})", highlight=False
    )
    _fail_on_conflicts(report.conflicts)


def _fail_on_conflicts(conflicts: list[str]) -> None:
    if conflicts:
        shown = ", ".join(conflicts[:5]) + (f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else "")
        stderr.print(
            f"[red]error:[/red] bound elsewhere to other content, kept local-only: {escape(shown)}",
            markup=True,
            highlight=False,
        )
        sys.exit(1)


@click.command()
@click.argument("prefix", default="")
@click.pass_context
def sync(ctx: click.Context, prefix: str) -> None:
    """Push pending names, then learn the names bound elsewhere (content is fetched lazily).
    With PREFIX, a machine that has not synced yet learns only the names under it from the
    remote's snapshot; whatever needs the others (a bind, a push, gc) learns them first."""
    with DelayedBar("pushing") as bar:
        report = lake_of(ctx).sync(progress=bar, prefix=prefix)
    stdout.print(
        f"pushed {report.pushed.names} names; {report.new_names} records from "
        f"{report.entries_read} new log entries",
        highlight=False,
    )
    _fail_on_conflicts(report.pushed.conflicts)


@click.group()
def remote() -> None:
    """The remote itself: its format."""


@remote.command()
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Switch the remote to the compact log (format 3) once every machine reads it."""
    lake = lake_of(ctx)
    changed = lake.upgrade_remote()
    url = lake.status()["remote"]
    stdout.print(f"remote {url}: {'now' if changed else 'already'} of format 3", highlight=False)


@click.command()
@click.argument("prefix", default="")
@click.pass_context
def pull(ctx: click.Context, prefix: str) -> None:
    """Sync, then download the content of every name under PREFIX."""
    with DelayedBar("pulling") as bar:
        files = lake_of(ctx).pull(prefix=prefix, progress=bar)
    if (prefix + "/").startswith("datasets/"):
        for dataset in lake_of(ctx).datasets_under(prefix):
            stdout.print(
                f"dataset {dataset.name} version {dataset.version} is local in {dataset.folder}",
                markup=False,
                highlight=False,
            )
        if not files:
            return
    stdout.print(f"{len(files)} files under {prefix or 'the lake'} are local", highlight=False)


@click.command()
@click.argument("prefix", default="")
@click.pass_context
def evict(ctx: click.Context, prefix: str) -> None:
    """Free local space: drop local copies under PREFIX that are safely on the remote."""
    report = lake_of(ctx).evict(prefix)
    stdout.print(f"evicted {report.files} files ({human_size(report.bytes)})", highlight=False)
    if report.kept_unpushed:
        stderr.print(
            f"kept {len(report.kept_unpushed)} files that are not on the remote: run `lakelet push` first",
            highlight=False,
        )


@click.command()
@click.argument("name")
@click.option("--expires", default="1h", show_default=True, help="Lifetime of a presigned URL: 30m, 1h, 7d.")
@click.option("--scope", default="lake", show_default=True, help="'lake', 'user' or 'pipeline/<run id>'.")
@click.pass_context
def url(ctx: click.Context, name: str, expires: str, scope: str) -> None:
    """A URL another tool can read NAME (or a content digest, blake3:<hex>) from (presigned on
    cloud stores)."""
    seconds = parse_duration(expires, "--expires").total_seconds()
    click.echo(lake_of(ctx).url(name, expires=max(1, int(seconds)), scope=scope))
