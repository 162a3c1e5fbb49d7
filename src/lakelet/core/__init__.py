"""Foundations every layer uses: the error tree (``errors``, public), digests that name their
algorithm, name validation, ``lakelet.toml`` and the current user, durable writes, fault points,
the progress callback, the types of the binary streams read.

Imports: nothing of lakelet's.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
