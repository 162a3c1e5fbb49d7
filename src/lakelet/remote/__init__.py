"""The shared source of truth in one fsspec store: conditional creates, the numbered commit log
and its snapshots, push, sync, verified fetches, and a lake's link to its remote.

Imports: ``core``, ``storage``, ``catalog``.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
