"""The code part of a stage's cache key: what the function *does*, not how it is written.

A function's code is its AST with docstrings removed (so whitespace, comments
and docstrings don't count), plus, transitively, the project's own functions,
classes and module-level constants it refers to. Code outside the project
(the standard library, installed packages) counts by package version, not by
source: upgrading pandas changes a key, editing a file in site-packages
without a version bump does not. The rules and their cases are in
docs/caching.md.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib.metadata
import inspect
import sys
import sysconfig
import textwrap
import types
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "CodeIdentity",
    "adopt_distributions",
    "code_identity",
    "is_project_code",
    "is_project_module",
    "known_distributions",
    "module_packages",
    "normalized_digest",
    "qualified_name",
]

# Values of these types are hashed by value when a function refers to a module-level name.
_CONSTANT_TYPES = (int, float, complex, str, bytes, bool, type(None), tuple, frozenset, list, dict, set)


@dataclass
class CodeIdentity:
    """The digest of a function's behaviour, and what went into it (for explaining a rerun)."""

    digest: str
    parts: dict[str, str] = field(default_factory=dict)  # 'module.qualname' or 'pkg==ver' -> digest


def code_identity(func: Any) -> CodeIdentity:
    """Digest ``func``'s normalized code and everything of the project it uses."""
    parts: dict[str, str] = {}
    _collect(_unwrap(func), parts, set())
    h = hashlib.sha256()
    for key in sorted(parts):
        h.update(f"{key}\0{parts[key]}\n".encode())
    return CodeIdentity(h.hexdigest(), parts)


def _unwrap(obj: Any) -> Any:
    # Read from the object's own __dict__, never through getattr: the attributes of any object
    # may be made up by its __getattr__ (a Polars expression answers every name), and nothing
    # is tested for truth, which user types may refuse (a NumPy array, a Polars expression).
    while True:
        try:
            attrs = vars(obj)
        except TypeError:
            return obj
        inner = attrs.get("__lakelet_function__")
        if inner is None:
            inner = attrs.get("__wrapped__")
        if inner is None or inner is obj:
            return obj
        obj = inner


def qualified_name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


def _collect(obj: Any, parts: dict[str, str], seen: set[int]) -> None:
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if not isinstance(obj, types.FunctionType | type):
        return
    if not is_project_code(obj):
        _add_package(obj, parts)
        return
    parts[qualified_name(obj)] = normalized_digest(obj)
    functions = (
        [obj]
        if isinstance(obj, types.FunctionType)
        else [m.__func__ if isinstance(m, classmethod | staticmethod) else m for m in vars(obj).values()]
    )
    for function in functions:
        if not isinstance(function, types.FunctionType):
            continue
        for label, value in _referenced(function):
            if isinstance(value, _CONSTANT_TYPES):
                parts[f"constant:{function.__module__}.{label}"] = _constant_digest(value)
            elif isinstance(value, types.ModuleType):
                _add_package(value, parts)
            elif callable(value):
                _collect(_unwrap(value), parts, seen)
            else:
                parts[f"object:{function.__module__}.{label}"] = _object_digest(value)


def _referenced(func: types.FunctionType) -> list[tuple[str, Any]]:
    """(name, value) of the globals, project-module attributes and closure cells the code uses."""
    names = _code_names(func.__code__)
    g = func.__globals__
    found: list[tuple[str, Any]] = []
    for name in sorted(names):
        if name not in g:
            continue  # a builtin, an attribute name, or a local
        value = g[name]
        if isinstance(value, types.ModuleType) and is_project_module(value):
            # `helpers.clean(x)`: the attribute names are in co_names too
            found += [(f"{name}.{n}", getattr(value, n)) for n in sorted(names) if n in vars(value)]
        else:
            found.append((name, value))
    for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=True):
        try:
            found.append((name, cell.cell_contents))
        except ValueError:  # an empty cell
            continue
    return found


def _constant_digest(value: Any) -> str:
    try:
        text = repr(_canonical(value))
    except TypeError:
        text = type(value).__qualname__
    return hashlib.sha256(text.encode()).hexdigest()


def _object_digest(value: Any) -> str:
    """Any other module-level value: by its type, and its bytes when it is an array (NumPy's
    ``tobytes``), never by comparing it or asking its truth, which user types may refuse (a
    Polars expression raises on ``bool``). Other values of one type share a digest: declare
    ``version=`` when a stage depends on such a value's content."""
    kind = type(value)
    h = hashlib.sha256(f"{kind.__module__}.{kind.__qualname__}".encode())
    if all(hasattr(kind, a) for a in ("tobytes", "dtype", "shape")):
        with contextlib.suppress(Exception):  # any refusal: keyed by type alone
            h.update(repr((str(value.dtype), tuple(value.shape))).encode())
            h.update(value.tobytes())
    return h.hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((repr(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return tuple(sorted(repr(_canonical(v)) for v in value))
    if isinstance(value, list | tuple):
        return tuple(_canonical(v) for v in value)
    if isinstance(value, _CONSTANT_TYPES):
        return value
    raise TypeError(type(value))


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested functions, lambdas, comprehensions
            names |= _code_names(const)
    return names


def normalized_digest(obj: Any) -> str:
    """sha256 of the AST of ``obj``'s source, without docstrings, comments or layout."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        # No source (a REPL, a C function), or only a fragment that does not parse (a lambda
        # inside a dict literal or on a call's continuation line): fall back to the bytecode,
        # which ignores layout and comments too.
        code = getattr(obj, "__code__", None)
        return _bytecode_digest(code) if code else hashlib.sha256(repr(obj).encode()).hexdigest()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            node.decorator_list = []  # the stage's options are keyed separately
    return hashlib.sha256(ast.dump(tree, annotate_fields=False).encode()).hexdigest()


def _bytecode_digest(code: types.CodeType) -> str:
    # Nested code objects (lambdas, comprehensions) are hashed the same way, not by repr,
    # whose memory address and line number would change the key on every run or edit above.
    h = hashlib.sha256(code.co_code)
    h.update(repr((code.co_names, code.co_varnames, code.co_freevars)).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            text = _bytecode_digest(const)
        else:
            try:
                text = repr(_canonical(const))  # a frozenset's repr follows the string hash seed
            except TypeError:
                text = repr(const)
        h.update(text.encode() + b"\0")
    return h.hexdigest()


def _add_package(obj: Any, parts: dict[str, str]) -> None:
    module_name = obj.__name__ if isinstance(obj, types.ModuleType) else getattr(obj, "__module__", "")
    top = (module_name or "").split(".")[0]
    if not top or top in sys.stdlib_module_names or top == "builtins":
        return
    dist = _distribution_of(top)
    if dist:
        parts[f"package:{dist[0]}"] = dist[1]


_distributions: dict[str, list[str]] | None = None


def _packages_distributions() -> dict[str, list[str]]:
    # ~1 s on a full venv (it reads every distribution's file list): once per process, and a
    # worker process is handed its parent's (known_distributions, adopt_distributions)
    global _distributions
    if _distributions is None:
        _distributions = dict(importlib.metadata.packages_distributions())
    return _distributions


def known_distributions() -> dict[str, list[str]] | None:
    """Top-level module -> distributions, if this process has worked it out."""
    return _distributions


def adopt_distributions(mapping: dict[str, list[str]] | None) -> None:
    """Take a parent process's ``known_distributions`` (the same installation)."""
    global _distributions
    if mapping is not None and _distributions is None:
        _distributions = mapping


@cache
def _distribution_of(top_level: str) -> tuple[str, str] | None:
    names = _packages_distributions().get(top_level)
    if not names:
        return None
    try:
        return names[0], importlib.metadata.version(names[0])
    except importlib.metadata.PackageNotFoundError:
        return None


@cache
def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    return tuple(str(Path(r).resolve()) for r in roots)


def is_project_module(module: types.ModuleType) -> bool:
    filename = getattr(module, "__file__", None)
    if not filename:
        return False
    path = str(Path(filename).resolve())
    return not path.startswith(_library_roots()) and not module.__name__.startswith("lakelet")


def is_project_code(obj: Any) -> bool:
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    if module is None:
        return True  # defined in a script or a REPL: treat as the user's own code
    if module.__name__ == "__main__":
        return True
    return is_project_module(module)


@cache
def module_packages(func: Any) -> dict[str, str]:
    """Versions of the installed packages the function's module imports (for lineage): once per
    function and process, like its code identity (shared: callers must not change it)."""
    return dict(_module_packages(func))


def _module_packages(func: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in list(getattr(_unwrap(func), "__globals__", {}).values()):
        name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        top = (name or "").split(".")[0] if isinstance(name, str) else ""
        if not top or top in sys.stdlib_module_names or top in ("builtins", "lakelet"):
            continue
        module = sys.modules.get(top)
        if module is None or is_project_module(module):
            continue
        dist = _distribution_of(top)
        if dist:
            out[dist[0]] = dist[1]
    return out
