"""``lakelet.run``: the stage graph (``_graph``), executors and workers (``_executors``), scheduling
(``_schedule``), what a run tells its observer and the run report (``_events``); ``_run`` is the
entry point.

Imports: every layer below, up to ``stages``.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
