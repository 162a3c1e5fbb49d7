"""Bytes on this machine: the content-addressed object store and its verified reader, name
segments (append-only binding records), scope layouts, packs, and the sources an add reads.

Imports: ``core``.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
