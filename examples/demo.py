"""lakelet in five minutes, on an embedded lake in a temporary folder.

./scripts/demo            # sets everything up, then runs this file; ends with the `lakelet ui` command
.venv/bin/python examples/demo.py --clean  # remove the temporary lake at the end
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

import lakelet

console = Console(highlight=False)


def step(title: str) -> None:
    console.print()
    console.rule(f"[bold]{title}", align="left")


def shell(lake_root: Path, *args: str) -> None:
    """Run the real `lakelet` CLI on the same lake, showing the command."""
    console.print(f"[dim]$ lakelet {' '.join(args)}[/dim]")
    env = {**os.environ, "LAKELET_HOME": str(lake_root)}
    out = subprocess.run([sys.executable, "-m", "lakelet", *args], env=env, capture_output=True, text=True)
    sys.stdout.write(out.stdout)
    sys.stdout.write(out.stderr)
    sys.stdout.flush()


def write_raw_orders(folder: Path) -> None:
    rows = {
        "2025-01-20": [(1, "alice", 9.50), (2, "bob", 12.00)],
        "2025-01-21": [(3, "carol", 4.25), (4, "alice", 30.00), (5, "dave", 7.75)],
        "2025-01-22": [(6, "bob", 18.40)],
    }
    folder.mkdir(parents=True)
    for day, orders in rows.items():
        with open(folder / f"{day}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["order_id", "customer", "amount"])
            w.writerows(orders)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean", action="store_true", help="remove the temporary lake at the end")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lakelet-demo-"))
    try:
        tell(work)
    finally:
        if args.clean:
            shutil.rmtree(work, ignore_errors=True)
    if not args.clean:
        lakelet_cli = Path(sys.executable).parent / "lakelet"
        step("Look at what it built: names, the lineage graph, the dataset's histograms, the runs")
        console.print(
            f"  [bold]{lakelet_cli} --lake {work / 'lake'} ui --open[/bold]\n"
            f"(a page on http://127.0.0.1:8765/; Ctrl-C stops it; `rm -r {work}` removes the demo)",
            highlight=False,
        )


def tell(work: Path) -> None:
    step("1. An embedded lake: one folder, nothing to run")
    lake = lakelet.init(work / "lake")
    console.print(f"lakelet.init({str(work / 'lake')!r}) → {lake!r}")

    step("2. Add raw CSVs: each file is stored once, under its content digest")
    incoming = work / "incoming"
    write_raw_orders(incoming)
    files = lake.add(incoming, "raw/orders")
    console.print(f"lake.add('incoming/', 'raw/orders') bound {len(files)} names")
    again = lake.add(incoming, "raw/orders")
    console.print(
        f"adding the same content again is a no-op: still {len(again)} names, {len(lake.ls())} in the lake"
    )
    (incoming / "2025-01-22.csv").write_text("order_id,customer,amount\n6,bob,99.99\n")
    try:
        lake.add(incoming / "2025-01-22.csv", "raw/orders/2025-01-22.csv")
    except lakelet.NameExistsError as e:
        console.print(f"rebinding a name to other content is refused: [red]{type(e).__name__}[/red]: {e}")

    step("3. List and inspect")
    table = Table("name", "size", "digest", "creator")
    for f in lake.ls("raw/"):
        table.add_row(f.name, f"{f.size} B", f.digest[:22] + "…", f.creator)
    console.print(table)
    shell(lake.root, "info", "raw/orders/2025-01-21.csv")

    step("4. Read back: verified against the digest on every open")
    total = 0.0
    for f in lake.ls("raw/orders/"):
        with f.open("r") as fh:
            total += sum(float(row["amount"]) for row in csv.DictReader(fh))
    console.print(f"revenue over {len(lake.ls('raw/orders/'))} days: {total:.2f}")

    other_tools(lake)

    step("5. Scoped stores: a pipeline run's scratch space, and yours")
    run = lake.pipeline("nightly-2025-01-22")
    buf = io.StringIO()
    csv.writer(buf).writerows([["customer", "amount"], ["alice", "39.50"], ["bob", "30.40"]])
    run.puts("by_customer.csv", buf.getvalue().encode())
    run.put("inputs/2025-01-20.csv", incoming / "2025-01-20.csv")
    console.print(f"run.list() → {run.list()}")
    console.print(
        f"run.gets('by_customer.csv', byte_range=[0, 15]) → "
        f"{run.gets('by_customer.csv', byte_range=[0, 15])!r}  (reads only those bytes)"
    )
    lake.user.puts("notes/todo.txt", b"look at bob's orders\n")
    lake.user.puts("notes/todo.txt", b"look at bob's and alice's orders\n")  # scoped names may change
    console.print(f"lake.user.gets('notes/todo.txt') → {lake.user.gets('notes/todo.txt')!r}")
    console.print(
        f"scopes never see each other: lake.exists('by_customer.csv') → {lake.exists('by_customer.csv')}"
    )
    run.archive()
    console.print(f"after run.archive(): run.list() → {run.list()}")

    step("6. fsck: every object checked against its digest")
    report = lake.fsck()
    console.print(
        f"checked {report.objects_checked} objects, indexed {report.names_indexed} names, "
        f"corrupt: {report.corrupt or 'none'}"
    )

    step("7. Bit rot is caught, never served")
    victim = lake.file("raw/orders/2025-01-20.csv")
    os.chmod(victim.path, 0o644)  # objects are read-only on disk; a stray process changes one anyway
    victim.path.write_bytes(b"order_id,customer,amount\n1,alice,9999.50\n")
    try:
        victim.read_text()
    except lakelet.IntegrityError as e:
        console.print(f"[red]{type(e).__name__}[/red]: {e}")
    shell(lake.root, "fsck")

    share(work, incoming)
    stages(work, lake)
    datasets(incoming, lake)

    console.print("\n[bold green]That is lakelet today.[/bold green]")


class _Notebook:
    """What IPython hands ``_repr_pretty_``: the demo shows the text a notebook cell shows."""

    def __init__(self) -> None:
        self.out = ""

    def text(self, text: str) -> None:
        self.out += text


def notebook_view(obj: object) -> str:
    printer = _Notebook()
    obj._repr_pretty_(printer, False)  # type: ignore[attr-defined]  # what IPython calls
    return printer.out


def other_tools(lake: lakelet.Lake) -> None:
    step("4b. Other tools read lake names: lakelet:// URLs, files as paths, bytes in, your own meta")
    import pandas as pd

    with lakelet.use(lake):  # lakelet:// with no options means the current lake
        df = pd.read_csv("lakelet://raw/orders/2025-01-21.csv")
    console.print(
        f'pd.read_csv("lakelet://raw/orders/2025-01-21.csv") → {len(df)} rows, columns {list(df.columns)}'
    )
    f = lake.file("raw/orders/2025-01-20.csv")
    console.print(
        f"pd.read_csv(lake.file(name)) → {len(pd.read_csv(f))} rows, from the read-only path {f.path.name}"
    )
    note = lake.add(b"checked by hand\n", "notes/2025-01-20.txt", meta={"ticket": "OPS-12"})
    console.print(f"lake.add(b'...', 'notes/2025-01-20.txt', meta=...) → meta {note.meta['ticket']!r}")
    console.print(f"lake.ls(glob='raw/**/*-2?.csv') → {[g.name for g in lake.ls(glob='raw/**/*-2?.csv')]}")
    console.print(
        "what a notebook cell ending in `lake.file('notes/2025-01-20.txt')` shows (as text; HTML in Jupyter):"
    )
    console.print(notebook_view(note), markup=False, soft_wrap=True)


PIPELINE = """\
import csv
import lakelet

TAX = 0.2


def with_tax(amount):
    return round(amount * (1 + TAX), 2)


@lakelet.stage(raw=lakelet.raw("raw/orders/2025-01-21.csv"))
def parse(raw):
    \"\"\"Read the day's orders.\"\"\"
    with open(raw) as f:
        return [dict(row, amount=float(row["amount"])) for row in csv.DictReader(f)]


@lakelet.stage(orders=parse)
def by_customer(orders):
    totals = {}
    for o in orders:
        totals[o["customer"]] = totals.get(o["customer"], 0) + with_tax(o["amount"])
    return totals


@lakelet.stage(totals=by_customer)
def report(totals):
    return "\\n".join(f"{c}: {t:.2f}" for c, t in sorted(totals.items()))


@lakelet.stage
def day_total(orders: lakelet.File):
    \"\"\"One day's revenue with tax: mapped over the day files.\"\"\"
    with orders.open() as f:
        return round(sum(with_tax(float(row["amount"])) for row in csv.DictReader(f)), 2)
"""


def stages(work: Path, lake: lakelet.Lake) -> None:
    step("9. Stages skip themselves: code-aware keys, lineage to the line")
    project = work / "project"
    project.mkdir()
    (project / "pipeline.py").write_text(PIPELINE)
    git = ["git", "-c", "user.email=demo@example.com", "-c", "user.name=demo"]
    for args in (
        ["init", "-q"],
        ["remote", "add", "origin", "git@github.com:acme/orders.git"],
        ["add", "."],
        ["commit", "-qm", "pipeline"],
    ):
        subprocess.run([*git, *args], cwd=project, check=True, capture_output=True)
    sys.path.insert(0, str(project))
    sys.dont_write_bytecode = True
    os.environ["LAKELET_EXPLAIN"] = "1"
    lakelet.use(lake)

    def run(title: str) -> None:
        import importlib

        sys.modules.pop("pipeline", None)
        importlib.invalidate_caches()
        console.print(f"[bold]{title}[/bold]")
        sys.stderr.flush()
        result = importlib.import_module("pipeline").report()
        console.print(f"  report() → {result!r}")

    run("first run: every stage runs")
    run("second run: nothing runs")
    source = project / "pipeline.py"
    edited = source.read_text().replace('"""Read the day\'s orders."""', "# reformatted, re-documented")
    source.write_text(edited)
    run("a comment instead of the docstring: nothing runs")
    source.write_text(source.read_text().replace('f"{c}: {t:.2f}"', 'f"{c}: {t:.2f} EUR"'))
    run("an edit to report's body: only report reruns")
    source.write_text(source.read_text().replace("TAX = 0.2", "TAX = 0.25"))
    run("TAX = 0.25: the stage that uses it reruns, and report after it; parse does not")
    source.write_text(source.read_text().replace("TAX = 0.25", "TAX = 0.3"))
    sys.modules.pop("pipeline", None)
    import importlib

    pipeline = importlib.import_module("pipeline")
    console.print(
        '[bold]TAX = 0.3, run as a graph on a process pool: lakelet.run(report, executor="processes")[/bold]'
    )
    result = lakelet.run(pipeline.report, executor="processes", max_workers=2, run_id="demo-run")
    console.print(f"  → {result!r}")
    shell(lake.root, "runs")
    console.print("what a notebook cell ending in `lake.runs()[-1]` shows (as text; HTML in Jupyter):")
    console.print(notebook_view(lake.runs()[-1]), markup=False, soft_wrap=True)
    os.environ.pop("LAKELET_EXPLAIN")
    days = [f for f in lake.ls("raw/orders/") if f.is_local]  # step 7's rotten file is quarantined
    console.print(
        f"[bold]one call per file: day_total.map(lake.ls('raw/orders/'), executor=\"processes\") "
        f"over {len(days)} files[/bold]"
    )
    totals = pipeline.day_total.map(days, executor="processes", max_workers=2)
    console.print(f"  → {dict(zip([f.name for f in days], totals, strict=True))}")
    again = pipeline.day_total.map(days)
    console.print(f"  again: each item keyed like day_total(file), nothing runs → {again == totals}")
    shell(lake.root, "ls")
    final = [f for f in lake.ls("stages/pipeline.report/") if "/output." in f.name][-1]
    os.environ["COLUMNS"] = "160"
    shell(lake.root, "lineage", final.name, "--depth", "2")


def datasets(incoming: Path, lake: lakelet.Lake) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.dataset as pads

    step("10. Datasets: Delta Lake tables that DuckDB, Polars and delta-rs read at any version")
    for day_file in sorted(incoming.glob("*.csv")):
        table = pacsv.read_csv(day_file)
        table = table.append_column("dt", pa.array([day_file.stem] * table.num_rows))
        ds = lake.write_dataset("sales/orders", table, partition_by=["dt"])
        console.print(
            f"write_dataset('sales/orders', {day_file.name}) → version {ds.version}, {ds.num_rows} rows"
        )
    shell(lake.root, "datasets")
    shell(lake.root, "info", "datasets/sales/orders")
    day = lake.dataset("sales/orders").to_arrow(filter=pads.field("dt") == "2025-01-21")
    console.print(
        f"one partition, pruned before reading: {day.num_rows} rows, "
        f"customers {sorted(set(day.column('customer').to_pylist()))}"
    )
    first = table.slice(0, 1)
    changed = first.set_column(first.schema.get_field_index("amount"), "amount", pa.array([999.0]))
    ds = lake.write_dataset("sales/orders", changed, mode="merge", keys=["order_id", "dt"])
    console.print(
        f"write_dataset(..., mode='merge', keys=['order_id', 'dt']) → version {ds.version}: "
        f"order {first.column('order_id')[0]} of {first.column('dt')[0]} now costs 999.0, "
        f"still {ds.num_rows} rows"
    )
    delta_readers(ds)


def delta_readers(ds: lakelet.Dataset) -> None:
    """Engines lakelet did not write: each reads the Delta table in ds.folder at a version."""
    import deltalake
    import duckdb
    import polars as pl

    folder = str(ds.folder)
    con = duckdb.connect()
    con.register("orders", deltalake.DeltaTable(folder).to_pyarrow_dataset())
    total = con.sql("SELECT count(*), round(sum(amount), 2) FROM orders").fetchall()[0]
    console.print(
        f"DuckDB on deltalake's dataset of {ds.folder.name}/ (Delta version {ds.version - 1}): {total}"
    )
    before = pl.read_delta(folder, version=ds.version - 2)
    console.print(
        f"Polars, time travel to lakelet version {ds.version - 1} (Delta {ds.version - 2}): "
        f"{before.height} rows, max amount {before['amount'].max()}"
    )
    console.print(f"ds.files: {[p.split('/sales/orders/')[1] for p in ds.files]}")


def share(work: Path, incoming: Path) -> None:
    step("8. Share through a remote: a second machine sees every name, fetches lazily")
    remote = (work / "bucket").as_uri()  # any fsspec URL: s3://…, gs://…, az://…
    laptop = lakelet.init(work / "laptop", remote=remote)
    server = lakelet.init(work / "server", remote=remote)
    console.print(f"two lakes, two roots, one remote: {remote}")
    laptop.add(incoming, "raw/orders")
    console.print("laptop: lake.add('incoming/', 'raw/orders')  (uploaded before add returns)")
    report = server.sync()
    console.print(
        f"server: lake.sync() → {report.new_names} names from {report.entries_read} "
        "log entry, no content downloaded"
    )
    shell(server.root, "ls", "raw/")
    f = server.file("raw/orders/2025-01-21.csv")
    console.print(
        f"server: first open downloads and verifies → {f.read_text().splitlines()[1]!r}, now {f.state}"
    )
    (work / "mine.csv").write_text("order_id,customer,amount\n1,mallory,0.01\n")
    try:
        server.add(work / "mine.csv", "raw/orders/2025-01-20.csv")
    except lakelet.NameExistsError as e:
        console.print(f"server: binding a taken name → [red]{type(e).__name__}[/red]: {e}")
    run = server.pipeline("nightly")
    run.puts("report.txt", b"3 days, 6 orders\n")
    console.print(
        f"laptop sees the server's run store: {laptop.pipeline('nightly').list()} → "
        f"{laptop.pipeline('nightly').gets('report.txt')!r}"
    )


if __name__ == "__main__":
    main()
