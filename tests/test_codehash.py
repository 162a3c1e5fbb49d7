"""The code part of a stage's key: which edits change it and which don't."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid

import pytest

from lakelet.stages._codehash import code_identity

BASE = '''
import json
import blake3

RATE = 0.2
UNUSED = 1


def helper(x):
    return x * (1 + RATE)


def other(x):
    return x - 1


def stage(x):
    """Apply the rate."""
    # a comment
    total = helper(x)
    return json.dumps({"total": total})


def uses_package(x):
    return blake3.blake3(x).hexdigest()
'''


@pytest.fixture
def load(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a stale .pyc must not hide an edit

    def load(source: str, function: str = "stage") -> str:
        name = f"user_module_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()
        module = importlib.import_module(name)
        identity = code_identity(getattr(module, function))
        # the module name is part of qualified names: compare digests of the parts' values
        return "|".join(
            f"{k.split('.', 1)[-1] if k.startswith('user_module') else k}={v}"
            for k, v in sorted((k.replace(name, "M"), v) for k, v in identity.parts.items())
        )

    return load


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace('"""Apply the rate."""', '"""Apply the rate, documented better."""'),
        lambda s: s.replace("# a comment", "# another comment\n    # and one more"),
        lambda s: s.replace("total = helper(x)", "total   =   helper( x )"),
        lambda s: s.replace("def other(x):\n    return x - 1", "def other(x):\n    return x - 2"),
        lambda s: s.replace("UNUSED = 1", "UNUSED = 2"),
        lambda s: s + "\n\ndef brand_new():\n    return 3\n",
    ],
    ids=["docstring", "comment", "whitespace", "unrelated-function", "unrelated-constant", "new-function"],
)
def test_edits_that_do_not_change_the_key(load, edit) -> None:
    assert load(edit(BASE)) == load(BASE)


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace("return x * (1 + RATE)", "return x * (1 + RATE) + 0"),
        lambda s: s.replace("RATE = 0.2", "RATE = 0.25"),
        lambda s: s.replace('{"total": total}', '{"sum": total}'),
        lambda s: s.replace("total = helper(x)", "total = other(x)"),
    ],
    ids=["helper-body", "constant", "stage-body", "calls-another-helper"],
)
def test_edits_that_change_the_key(load, edit) -> None:
    assert load(edit(BASE)) != load(BASE)


def test_third_party_code_counts_by_version(load) -> None:
    parts = load(BASE, "uses_package")
    assert "package:blake3=" in parts
    assert "json" not in parts  # the standard library goes with the Python version


def test_helpers_in_another_project_module_count(load, tmp_path) -> None:
    (tmp_path / "helpers_mod.py").write_text("def clean(x):\n    return x.strip()\n")
    source = "import helpers_mod\n\ndef stage(x):\n    return helpers_mod.clean(x)\n"
    before = load(source)
    (tmp_path / "helpers_mod.py").write_text("def clean(x):\n    return x.strip().lower()\n")
    sys.modules.pop("helpers_mod", None)
    assert load(source) != before


UNTESTABLE = '''
class Expr:
    """Like a Polars expression: every attribute is another expression, and asking one for
    its truth or comparing it raises."""

    def __getattr__(self, name):
        return Expr()

    def __bool__(self):
        raise TypeError("the truth value of an Expr is ambiguous")

    def __eq__(self, other):
        raise TypeError("Expr == is lazy")

    __hash__ = object.__hash__


TOTAL = Expr()


def stage(x):
    return (TOTAL, x)
'''


def test_a_global_that_refuses_truth_and_comparison_is_keyed_by_its_type(load, tmp_path) -> None:
    assert "object:M.TOTAL=" in load(UNTESTABLE)
    (tmp_path / "exprs_mod.py").write_text(textwrap.dedent(UNTESTABLE))
    module = importlib.import_module("exprs_mod")
    before = code_identity(module.stage).parts
    module.TOTAL = module.Expr()  # another instance: the same key (by type, not by id or repr)
    assert code_identity(module.stage).parts == before


def test_a_global_array_is_keyed_by_its_bytes(load) -> None:
    source = "import numpy\n\nWEIGHTS = numpy.array([1.0, 2.0])\n\ndef stage(x):\n    return WEIGHTS * x\n"
    before = load(source)
    assert before == load(source)
    assert load(source.replace("2.0", "3.0")) != before
