"""``lakelet run``: import a pipeline's stage by ``file.py:stage`` or ``module:stage`` and run it."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import click

import lakelet
from lakelet import InvalidArgumentError

from ._context import lake_of
from ._render import stdout

__all__ = ["load_stage", "run"]


@click.command()
@click.argument("targets", nargs=-1, required=True, metavar="TARGET...")
@click.option(
    "--executor",
    metavar="processes|dask://HOST:PORT",
    default=None,
    help="Where stages run (default: one at a time in this process).",
)
@click.option(
    "--max-workers",
    type=click.IntRange(min=1),
    default=None,
    help="How many processes --executor processes starts (default: one per CPU).",
)
@click.option("--run-id", default=None, help="The run's id (default: run-<UTC time>-<random>).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: the run report.")
@click.pass_context
def run(
    ctx: click.Context,
    targets: tuple[str, ...],
    executor: str | None,
    max_workers: int | None,
    run_id: str | None,
    as_json: bool,
) -> None:
    """Run the stages TARGET (path/to/pipeline.py:stage or package.module:stage) and whatever
    they need that is not cached."""
    if executor is not None and executor != "processes" and not executor.startswith("dask://"):
        raise InvalidArgumentError(f'--executor must be "processes" or "dask://host:port", not {executor!r}')
    stages = [load_stage(target) for target in targets]
    from ._run_display import RunDisplay

    display = RunDisplay()
    with contextlib.ExitStack() as stack:
        if ctx.obj.get("lake") is not None:  # else the lake the pipeline chose, or the default one
            stack.enter_context(lakelet.use(lake_of(ctx)))
        stack.callback(display.close)  # the line goes, also when the run fails or is interrupted
        lakelet.run(
            *stages,
            executor=executor,
            max_workers=max_workers,
            run_id=run_id,
            observer=display,
            progress=False,
        )
    report = display.report
    assert report is not None  # a run that returns has told its observer it finished
    if as_json:
        click.echo(json.dumps(report.__dict__, indent=2))
        return
    stdout.print(
        f"run {report.run_id}: {len(report.ran)} ran, {len(report.skipped)} skipped, "
        f"{len(report.failed)} failed",
        highlight=False,
    )


def load_stage(target: str) -> lakelet.Stage:
    """The stage ``path/to/pipeline.py:name`` or ``package.module:name`` names."""
    where, _, name = target.rpartition(":")
    if not where or not name:
        raise InvalidArgumentError(
            f"{target!r} names no stage: use path/to/pipeline.py:stage or package.module:stage"
        )
    is_file = where.endswith(".py") or "/" in where or os.sep in where
    value: object = _import_file(Path(where)) if is_file else _import_module(where)
    for part in name.split("."):
        if not hasattr(value, part):
            raise InvalidArgumentError(f"{where} has no {name!r}")
        value = getattr(value, part)
    if not isinstance(value, lakelet.Stage):
        raise InvalidArgumentError(f"{target} is not a @lakelet.stage ({type(value).__name__})")
    return value


def _import_file(path: Path) -> ModuleType:
    """``path`` imported as a top-level module named after it, its folder first on ``sys.path``
    (as ``python path`` does), so that worker processes import it by the same name."""
    if not path.is_file():
        raise InvalidArgumentError(f"no file {path}")
    if not path.stem.isidentifier():
        raise InvalidArgumentError(f"{path} cannot be imported: {path.stem!r} is not a Python module name")
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = importlib.import_module(path.stem)
    if module.__file__ is None or Path(module.__file__).resolve() != path.resolve():
        raise InvalidArgumentError(
            f"{path} cannot be imported: the module name {path.stem!r} is "
            f"taken by {module.__file__ or 'a built-in module'}; rename the file"
        )
    return module


def _import_module(name: str) -> ModuleType:
    """``name`` imported from the working directory or the installed packages."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:  # that module, not one it imports
        if e.name is None or not (name == e.name or name.startswith(f"{e.name}.")):
            raise
        raise InvalidArgumentError(f"no module named {e.name!r} here ({os.getcwd()}) or installed") from None
