"""What every command shares: the lake that ``lakelet --lake PATH`` (or its default) names."""

from __future__ import annotations

import click

import lakelet
from lakelet import Lake

__all__ = ["lake_of"]


def lake_of(ctx: click.Context) -> Lake:
    return lakelet.open(ctx.obj.get("lake"))
