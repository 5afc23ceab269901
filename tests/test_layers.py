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
    "bench": SHARED | {"memory", "core", "modalities", "orchestrator", "eval", "api", "client"},
}
#: Single-module layers: the SDK needs only the shared types (a client installs without the models).
MODULES = {"client": {"errors", "schema"}}


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


def _module_imports(path: Path, package: str) -> set[str]:
    """Modules of `package` a file imports, lazily too; imports under `if TYPE_CHECKING:` are
    for type checkers only and do not count. `from package import x` counts as module x."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module == package:
            found |= {f"{package}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package + "."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith(package + ".")}
    return found


def test_the_orchestrator_has_no_import_circle() -> None:
    package = "unipgen.orchestrator"
    files = {f"{package}.{path.stem}": path for path in (PACKAGE / "orchestrator").glob("*.py")
             if path.stem != "__init__"}
    graph = {module: _module_imports(path, package) & set(files) for module, path in files.items()}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})) for nxt in graph[start])

    assert [module for module in graph if reaches(module, module, {module})] == []
