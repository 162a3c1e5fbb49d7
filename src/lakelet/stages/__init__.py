"""``@lakelet.stage``: cache keys, the normalized code hash, output formats, where code lives.

Imports: every layer below, up to ``facade``.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
