"""Find and run a benchmark module of the source checkout's `benchmarks/` directory."""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import sys
from pathlib import Path
from typing import Any

from unipgen.errors import NotFoundError

BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def shared_data_dir() -> Path:
    """The full data sets: `UNIPGEN_SHARED_DATA`, else ../shared/data beside the checkout."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("UNIPGEN_SHARED_DATA", default))


def shown_data_path(path: str | Path) -> str:
    """A data path as results and docs name it: `../shared/data/...` for the shared data sets,
    so that no machine's absolute path is recorded; any other path as given."""
    try:
        return f"../shared/data/{Path(path).resolve().relative_to(shared_data_dir().resolve()).as_posix()}"
    except ValueError:
        return str(path)


def machine(*modules: str) -> dict[str, Any]:
    """The CPU, core count and Python a benchmark ran on, and the `__version__` of `modules`."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
    return info | {name: importlib.import_module(name).__version__ for name in modules}


def run_benchmark(name: str, **options: Any) -> dict[str, Any]:
    """Import `benchmarks/<name>.py` and return its `run(**options)` result."""
    path = BENCHMARKS_DIR / f"{name}.py"
    if not path.is_file():
        raise NotFoundError(f"benchmark {name!r} not found at {path}: benchmarks run from a source checkout")
    if str(BENCHMARKS_DIR) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS_DIR))  # benchmark modules import their siblings
    spec = importlib.util.spec_from_file_location(f"unipgen_benchmarks.{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module.run(**options)
