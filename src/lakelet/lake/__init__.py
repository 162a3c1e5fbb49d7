"""``LakeContext`` (the parts of one opened lake, built once) and the verbs that work on it:
add, fsck, gc, scoped stores, stage-run expiry, pending stage outputs, run reports and mirrored
files.

Imports: ``core``, ``storage``, ``catalog``, ``remote``, ``secrets``.

See docs/architecture.md.
"""

__all__: list[str] = []  # a layer: its modules are private, lakelet/__init__.py exports
