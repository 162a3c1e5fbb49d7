"""The SQLite index of names, and binding a batch of names under the bind lock.

Imports: ``core``, ``storage``.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
