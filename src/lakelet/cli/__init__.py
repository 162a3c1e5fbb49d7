"""The ``lakelet`` command line: a thin layer that parses, calls the library, renders with rich."""

from .main import cli, main

__all__ = ["cli", "main"]
