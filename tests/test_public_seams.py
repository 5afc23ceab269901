"""Packages whose modules meet only through public names, stay small, and say what they are for
(every module of the package; `KNOWN` lists the private names of other projects used on purpose).

Read with `ast`, nothing imported: a module may not import another module's private name
(`from x import _name`, or a private module `x._y`) nor reach one through an imported name
(`module._name`); `self._x` inside a class is its own business.

The store's parts (every module `unipgen.memory.store` imports from `unipgen.memory`, and what
those import in turn) also never import the store back, not even for type checking: a part gets
what it needs through its constructor.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

UNIPGEN = Path(__file__).resolve().parents[1] / "unipgen"
FILES = sorted(UNIPGEN.rglob("*.py"))
#: Private names of other packages used on purpose, each with why (file → the checker's findings).
KNOWN = {
    # Ray has no public switch for these: the auth mode and token it keeps, and the cluster-mode
    # constant that must be off before a loopback-only local cluster starts (see the module doc).
    "orchestrator/ray_cluster.py": ["106: from ray._raylet import ...", "117: import ray._private.ray_constants"],
}
MAX_LINES = 500
STORE = "unipgen.memory.store"


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


def imported_modules(source: str) -> set[str]:
    """Every module `source` imports (``from a.b import c`` counts as ``a.b`` and ``a.b.c``),
    wherever the import stands (in an ``if TYPE_CHECKING:`` block too)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _module_file(name: str) -> Path | None:
    path = UNIPGEN.parent / Path(*name.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def store_parts() -> dict[str, set[str]]:
    """The modules of `unipgen.memory` the store is built from (what it imports there, and what
    those import, transitively), each with the modules it imports."""
    seen: dict[str, set[str]] = {}
    todo = [name for name in imported_modules(_module_file(STORE).read_text())
            if name.startswith("unipgen.memory.") and _module_file(name)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = imported_modules(_module_file(name).read_text())
        todo += [n for n in seen[name] if n.startswith("unipgen.memory.") and _module_file(n) and n not in seen]
    return seen


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


def test_the_import_reader_sees_type_checking_imports() -> None:
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n"
              "    from unipgen.memory.store import MemoryStore\n")
    assert STORE in imported_modules(source)


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.relative_to(UNIPGEN).as_posix())
def test_no_private_name_of_another_module(path: Path) -> None:
    assert private_uses(path.read_text()) == KNOWN.get(path.relative_to(UNIPGEN).as_posix(), [])


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.relative_to(UNIPGEN).as_posix())
def test_each_module_is_small_and_says_what_it_is_for(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) < MAX_LINES
    assert ast.get_docstring(ast.parse(source)), f"{path.name} has no module docstring"


def test_no_part_of_the_store_imports_the_store_back() -> None:
    parts = store_parts()
    assert {"unipgen.memory.users", "unipgen.memory.content", "unipgen.memory.privacy"} <= parts.keys()
    back = {name: sorted(n for n in imports if n in (STORE, f"{STORE}.MemoryStore", "unipgen.memory.MemoryStore"))
            for name, imports in parts.items()}
    assert {name: found for name, found in back.items() if found} == {}
