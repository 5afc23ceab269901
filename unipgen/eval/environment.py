"""Where a measurement's data sets live and which machine it ran on.

Every harness in `unipgen.eval` and every benchmark in `unipgen.bench` records `machine(...)`
beside its figures, and finds the full data sets with `shared_data_dir()`; results name those
data sets with `shown_data_path`, so that no machine's absolute path is recorded.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

#: The variables that set BLAS/OpenMP thread counts: recorded by `machine`; benchmarks default
#: them to 1 (two threads on two shared cores can run ten times slower than one).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def shared_data_dir() -> Path:
    """The full data sets: `UNIPGEN_SHARED_DATA`, else ../shared/data beside the checkout."""
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    return Path(os.environ.get("UNIPGEN_SHARED_DATA", default))


def shown_data_path(path: str | Path) -> str:
    """A data path as results and docs name it: `../shared/data/...` for the shared data sets,
    so that no machine's absolute path is recorded; any other path as given."""
    try:
        return f"../shared/data/{Path(path).resolve().relative_to(shared_data_dir().resolve()).as_posix()}"
    except ValueError:
        return str(path)


def machine(*modules: str) -> dict[str, Any]:
    """The CPU, core count, Python and thread settings a measurement ran with, and the
    `__version__` of `modules` (with "torch": its thread count; with "sqlalchemy": SQLite's version)."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
               platform.processor())
    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    info |= {name: importlib.import_module(name).__version__ for name in modules}
    if "torch" in modules:
        info["torch_threads"] = sys.modules["torch"].get_num_threads()
    if "sqlalchemy" in modules:
        import sqlite3

        info["sqlite"] = sqlite3.sqlite_version
    return info
