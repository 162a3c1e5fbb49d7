"""``lakelet gc / fsck``: freeing space and checking what is stored."""

from __future__ import annotations

import json
import sys

import click

from lakelet import parse_duration

from ._context import lake_of
from ._render import DelayedBar, human_size, stderr, stdout

__all__ = ["fsck", "gc"]


@click.command()
@click.option("--ttl", default="7d", show_default=True, help="Pipeline runs older than this go.")
@click.option("--dry-run", is_flag=True, help="Only list what would go.")
@click.option(
    "--remote",
    "on_remote",
    is_flag=True,
    help="Also delete unreferenced objects on the remote, and a file:// remote's "
    "leftover temp files (both older than a day).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def gc(ctx: click.Context, ttl: str, dry_run: bool, on_remote: bool, as_json: bool) -> None:
    """Drop expired pipeline runs, stage outputs whose ttl= has passed and that nothing live
    read, and objects older than a day that no name refers to."""
    report = lake_of(ctx).gc(parse_duration(ttl, "--ttl"), dry_run=dry_run, remote=on_remote)
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    temps = f", {len(report.remote_temps)} remote temp files" if report.remote_temps else ""
    stdout.print(
        f"{verb} {len(report.runs)} pipeline runs, {len(report.objects)} local objects, "
        f"{len(report.remote_objects)} remote objects{temps} ({human_size(report.bytes)}); "
        f"{len(report.stage_runs)} expired stage runs ({len(report.stage_outputs)} outputs)",
        highlight=False,
    )
    for run_id in report.runs:
        stdout.print(f"  run {run_id}", highlight=False)
    for name in [*report.stage_runs, *report.stage_outputs]:
        stdout.print(f"  {name}", highlight=False)
    for digest_or_key in [*report.objects, *report.remote_objects, *report.remote_temps]:
        stdout.print(f"  {digest_or_key}", highlight=False)
    for name, why in report.kept.items():
        stderr.print(f"kept expired {name}: {why}", highlight=False)


@click.command()
@click.option(
    "--remote",
    "on_remote",
    is_flag=True,
    help="Also read back every object the remote's names need, and report those it lacks or holds damaged.",
)
@click.option("--repair", is_flag=True, help="With --remote: send the good local copy over each of those.")
@click.option(
    "--upgrade", is_flag=True, help="Convert datasets in the former manifest format to Delta tables."
)
@click.pass_context
def fsck(ctx: click.Context, on_remote: bool, repair: bool, upgrade: bool) -> None:
    """Verify every stored object against its digest and rebuild the local index."""
    lake = lake_of(ctx)
    with DelayedBar("verifying") as bar:
        report = lake.fsck(progress=bar, upgrade=upgrade, remote=on_remote, repair=repair)
    for name in report.datasets_upgraded:
        stdout.print(f"dataset {name}: converted to a Delta table", markup=False, highlight=False)
    stdout.print(
        f"checked {report.objects_checked} objects, indexed {report.names_indexed} names",
        highlight=False,
    )
    if on_remote:
        stdout.print(
            f"checked {report.remote_checked} objects on remote {lake.remote}", markup=False, highlight=False
        )
    for digest, problem in report.remote_damaged.items():
        if digest in report.remote_repaired:
            then = "re-sent from the local copy"
        elif repair:
            then = "no intact copy here: repair from a machine that holds it"
        else:
            then = "run `lakelet fsck --remote --repair` on a machine that holds it"
        stderr.print(f"remote: {digest} {problem}: {then}", markup=False, highlight=False)
    for digest in report.corrupt:
        stderr.print(f"corrupt: {digest} (moved to quarantine/)", highlight=False)
    for name in report.missing:
        stderr.print(f"missing content: {name}", highlight=False)
    if report.index_set_aside is not None:
        stderr.print(
            f"unreadable index: moved to {report.index_set_aside} and rebuilt", markup=False, highlight=False
        )
    for problem in report.records_quarantined:
        stderr.print(
            f"invalid name record: {problem} (a copy kept in quarantine/)", markup=False, highlight=False
        )
    for key in report.manifests_quarantined:
        stderr.print(f"invalid dataset commit: {key} (moved to quarantine/)", markup=False, highlight=False)
    if not report.ok:
        sys.exit(1)
