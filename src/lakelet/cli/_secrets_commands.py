"""``lakelet secrets set / list / rm``: values come from a hidden prompt or stdin, never from argv
(where other users' ``ps`` and the shell history would see them)."""

from __future__ import annotations

import json
import sys

import click

from ._context import lake_of
from ._render import new_table, stdout

__all__ = ["secrets", "secrets_list", "secrets_rm", "secrets_set"]


@click.group()
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
    lake_of(ctx).secrets.set(name, value, org=org)
    stdout.print(f"set {'org' if org else 'user'} secret {name}", highlight=False)


@secrets.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def secrets_list(ctx: click.Context, as_json: bool) -> None:
    """Names, scope, when and by whom: never values."""
    infos = lake_of(ctx).secrets.list()
    if as_json:
        click.echo(json.dumps([i.__dict__ for i in infos], indent=2))
        return
    table = new_table(box=None, pad_edge=False)
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
    lake_of(ctx).secrets.delete(name, org=org)
    stdout.print(f"removed {'org' if org else 'user'} secret {name}", highlight=False)
