"""Versioned, partitioned Parquet datasets, their statistics, pipeline bookmarks and run logs,
and the Singer ingest. Works on a ``LakeContext``.

Imports: every layer below, up to ``lake``.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
