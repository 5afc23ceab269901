"""The modality modules meet only through public names, stay small, and say what they are for.

Read with `ast`, nothing imported: a module may not import another module's private name
(`from x import _name`, or a private module `x._y`) nor reach one through an imported name
(`module._name`); `self._x` inside a class is its own business. The checker, `private_uses`,
is `tests/test_public_seams.py`'s (which also tests it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_public_seams import private_uses

MODALITIES = Path(__file__).resolve().parents[2] / "unipgen" / "modalities"
FILES = sorted(MODALITIES.glob("*.py"))
MAX_LINES = 500


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_no_private_name_of_another_module(path: Path) -> None:
    assert private_uses(path.read_text()) == []


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_each_module_is_small_and_says_what_it_is_for(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) < MAX_LINES
    assert ast.get_docstring(ast.parse(source)), f"{path.name} has no module docstring"
