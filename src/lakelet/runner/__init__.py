"""``lakelet.run``: the stage graph, scheduling on executors (in process, processes, Dask), run
reports.

Imports: every layer below, up to ``stages``.

See docs/architecture.md.
"""
