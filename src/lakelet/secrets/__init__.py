"""Named values encrypted at rest (a local backend, or AWS SSM), handed to the stages that ask.

Imports: ``core``.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
