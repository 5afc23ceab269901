"""The modality modules meet only through public names, stay small, and say what they are for.

Read with `ast`, nothing imported: a module may not import another module's private name
(`from x import _name`, or a private module `x._y`) nor reach one through an imported name
(`module._name`); `self._x` inside a class is its own business.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MODALITIES = Path(__file__).resolve().parents[2] / "unipgen" / "modalities"
FILES = sorted(MODALITIES.glob("*.py"))
MAX_LINES = 500


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> list[str]:
    """Each use of another module's private name in `source`, as "line: what"."""
    tree = ast.parse(source)
    imported: set[str] = set()  # names bound by an import: modules, or names taken from one
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if any(_private(part) for part in alias.name.split(".")):
                    found.append(f"{node.lineno}: import {alias.name}")
                imported.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if any(_private(part) for part in module.split(".")):
                found.append(f"{node.lineno}: from {module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {'.' * node.level}{module} import {alias.name}")
                imported.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in imported):
            found.append(f"{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_the_checker_sees_private_names_across_modules() -> None:
    source = ("from unipgen.modalities.image import _Job, DiffusersImageBackend\n"
              "import unipgen.modalities.image as image\n"
              "from diffusers.utils import _get_model_file\n"
              "from pkg._impl import thing\n"
              "def f(self):\n"
              "    from unipgen.modalities import text\n"
              "    return image._FACE_METHOD, text._RowSampler, self._pipe, DiffusersImageBackend.__name__\n")
    assert private_uses(source) == ["1: from unipgen.modalities.image import _Job",
                                    "3: from diffusers.utils import _get_model_file",
                                    "4: from pkg._impl import ...", "7: image._FACE_METHOD", "7: text._RowSampler"]


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_no_private_name_of_another_module(path: Path) -> None:
    assert private_uses(path.read_text()) == []


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_each_module_is_small_and_says_what_it_is_for(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) < MAX_LINES
    assert ast.get_docstring(ast.parse(source)), f"{path.name} has no module docstring"
