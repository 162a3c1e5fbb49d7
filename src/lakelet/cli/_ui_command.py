"""``lakelet ui``: the read-only web page (the ``[ui]`` extra, imported only when it is asked for)."""

from __future__ import annotations

import sys

import click

from ._context import lake_of

__all__ = ["ui"]


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; anything but loopback requires the token.",
)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token",
    default=None,
    help="Token every request must carry (made up when --host is not loopback and none is given).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.pass_context
def ui(ctx: click.Context, host: str, port: int, token: str | None, open_browser: bool) -> None:
    """Serve a read-only web page on the lake: names, lineage graph, datasets, runs."""
    from lakelet.ui import serve

    def announce(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()  # the URL must show now, also through a pipe, while the server runs on

    serve(lake_of(ctx), host, port, token, open_browser, announce=announce)
