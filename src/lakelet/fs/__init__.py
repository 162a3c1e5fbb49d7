"""``lakelet://``: the lake as an fsspec filesystem, for pandas, Polars, pyarrow, Dask, DuckDB…

fsspec finds it through the ``fsspec.specs`` entry point (pyproject.toml) when a
``lakelet://`` URL is first used; importing this module registers it too. Not
imported by ``import lakelet``: fsspec is for those who use it (docs/fsspec.md).
"""

from fsspec.registry import register_implementation

from lakelet.fs._filesystem import PROTOCOL, LakeFileSystem

__all__ = ["LakeFileSystem"]

register_implementation(PROTOCOL, LakeFileSystem, clobber=True)
