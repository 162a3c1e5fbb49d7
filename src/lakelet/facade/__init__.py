"""What users hold: ``Lake``, ``File``, the current lake (``lakelet.use``), lineage read up and
down and drawn as a graph.

Imports: every layer below, up to ``datasets``.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
