"""The import direction of ARCHITECTURE.md holds: each layer imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "unipgen"
SHARED = {"errors", "settings", "tiny", "schema"}  # top-level modules any layer may use
ALLOWED = {
    "schema": {"errors", "settings"},
    "memory": SHARED,
    "core": SHARED | {"memory"},
    "modalities": SHARED,
    "orchestrator": SHARED | {"memory", "core", "modalities"},
    # Metrics use core's encoders; harnesses drive the whole platform (store, jobs) as the CLI does.
    "eval": SHARED | {"memory", "core", "modalities", "orchestrator"},
    "api": SHARED | {"memory", "core", "orchestrator"},
    # Benchmarks measure everything below, the service and its SDK included; only the CLI imports them.
    "bench": SHARED | {"memory", "core", "modalities", "orchestrator", "eval", "api", "client", "client_events"},
}
#: Single-module layers: the SDK needs only the shared types (a client installs without the models).
MODULES = {"client": {"errors", "schema", "client_events"}, "client_events": {"errors", "schema"}}


def _unipgen_imports(path: Path) -> set[str]:
    """First component after `unipgen.` of every import in a file (including lazy ones)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {n.split(".")[1] for n in names if n.startswith("unipgen.") and n.count(".") >= 1}
    return found


def test_layers_import_downward_only() -> None:
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in (PACKAGE / layer).rglob("*.py"):
            for imported in _unipgen_imports(path) - allowed - {layer}:
                wrong.append(f"{path.relative_to(PACKAGE)} imports unipgen.{imported}")
    for module, allowed in MODULES.items():
        path = PACKAGE / f"{module}.py"
        wrong += [f"{module}.py imports unipgen.{imported}" for imported in _unipgen_imports(path) - allowed]
    assert wrong == []


def _runtime_imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a file, lazy ones too; those under `if TYPE_CHECKING:` are for
    type checkers only and do not count."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    return [node for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in typing_only]


def _module_imports(path: Path, package: str) -> set[str]:
    """Modules of `package` a file imports, lazily too; imports under `if TYPE_CHECKING:` are
    for type checkers only and do not count. `from package import x` counts as module x."""
    found = set()
    for node in _runtime_imports(path):
        if isinstance(node, ast.ImportFrom) and node.module == package:
            found |= {f"{package}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package + "."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(package + ".")}
    return found


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package's ``__init__`` under its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("unipgen", *path.relative_to(PACKAGE).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _in_circles(graph: dict[str, set[str]]) -> list[str]:
    """The modules from which the import graph leads back to themselves."""
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    return sorted(module for module in graph if reaches(module, module, {module}))


def test_no_module_imports_itself_back() -> None:
    """No import circle anywhere in the package, lazy imports included (a package's
    ``__init__`` that re-exports its modules lazily is left out: it is the public face, not a step)."""
    modules = _modules()
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    graph = {name: _imported_modules(path, modules) - packages - {name}
             for name, path in modules.items() if name not in packages}
    assert _in_circles(graph) == []


def _imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules a file imports (lazily too, not under TYPE_CHECKING): ``from a.b
    import c`` is module a.b.c when there is one, else a.b."""
    found = set()
    for node in _runtime_imports(path):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return found & modules.keys()


def test_the_circle_finder_finds_a_lazy_circle() -> None:
    assert _in_circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == ["a", "b"]
