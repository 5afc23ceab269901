"""Which files of the package one `unipgen generate USER -m image` runs code in (issue 16's measure).

A profiler hook records every function call into a file under unipgen/ while the CLI command
runs on a two-user MovieLens sample (tiny profile, a fresh store, as a user runs it). Work done
while a module is imported (module-level code, and the functions it calls) is left out: it is
the same for every command and not part of the request's path.

What it prints:
- the files that run code (and how many in memory/);
- the files the request passes through: those in which a function calls into another package
  file (the rest are leaves: settings, tables, checks, schema validators);
- how many times each of those is entered (called from another file);
- the call cycles between files: groups of files that call into each other, so that the path
  goes back into a file it came from (a subclass's hook called by its base class, say).

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python tools/trace_request.py [--json]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections import Counter, defaultdict
from types import FrameType
from typing import Any

os.environ["OMP_NUM_THREADS"] = "1"

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "unipgen") + os.sep


def package_file(frame: FrameType) -> str | None:
    name = frame.f_code.co_filename
    return name[len(PKG):] if name.startswith(PKG) else None


def importing(frame: FrameType | None) -> bool:
    """Whether `frame` runs while a package module is being imported."""
    while frame is not None:
        if frame.f_code.co_name == "<module>" and package_file(frame):
            return True
        frame = frame.f_back
    return False


class Recorder:
    """The profiler hook: which package files run code and which call into which."""

    def __init__(self) -> None:
        self.ran: set[str] = set()
        self.entries: Counter[str] = Counter()
        self.calls: defaultdict[str, set[str]] = defaultdict(set)  # caller file -> callee files

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        callee = package_file(frame)
        if callee is None or frame.f_code.co_name == "<module>" or importing(frame.f_back):
            return
        self.ran.add(callee)
        outer = frame.f_back
        while outer is not None and package_file(outer) is None:
            outer = outer.f_back
        caller = package_file(outer) if outer is not None else None
        if caller is not None and caller != callee:
            self.entries[callee] += 1
            self.calls[caller].add(callee)

    def cycles(self) -> list[list[str]]:
        """Groups of files that reach each other by calls (strongly connected, more than one file)."""
        graph = {caller: sorted(callees) for caller, callees in self.calls.items()}
        found: list[list[str]] = []
        order: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []

        def visit(node: str) -> None:  # Tarjan's algorithm
            order[node] = low[node] = len(order)
            stack.append(node)
            for nxt in graph.get(node, []):
                if nxt not in order:
                    visit(nxt)
                    low[node] = min(low[node], low[nxt])
                elif nxt in stack:
                    low[node] = min(low[node], order[nxt])
            if low[node] == order[node]:
                group = []
                while True:
                    member = stack.pop()
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))

        for node in list(graph):
            if node not in order:
                visit(node)
        return sorted(found)

    def report(self) -> dict[str, Any]:
        through = sorted(self.calls)
        return {"ran": sorted(self.ran), "ran_in_memory": sorted(f for f in self.ran if f.startswith("memory/")),
                "through": through, "entries": {f: self.entries[f] for f in through},
                "calls": {caller: sorted(callees) for caller, callees in sorted(self.calls.items())},
                "cycles": self.cycles()}


def trace_generate() -> dict[str, Any]:
    """Ingest the sample, then trace one `generate -m image` through the CLI in this process."""
    from typer.testing import CliRunner

    from unipgen.cli import app

    sample = os.path.join(os.path.dirname(PKG.rstrip(os.sep)), "unipgen", "data", "movielens-sample")
    home = tempfile.mkdtemp(prefix="unipgen-trace-")
    runner = CliRunner()
    result = runner.invoke(app, ["--home", home, "ingest", "movielens", sample, "--users", "2"])
    assert result.exit_code == 0, result.output
    recorder = Recorder()
    sys.setprofile(recorder)
    try:
        result = runner.invoke(app, ["--home", home, "generate", "1", "-m", "image", "-i",
                                     "a poster for my movie night", "--json"])
    finally:
        sys.setprofile(None)
    assert result.exit_code == 0, result.output
    return recorder.report()


def main() -> None:
    report = trace_generate()
    if "--json" in sys.argv:
        print(json.dumps(report, indent=1))
        return
    print(f"{len(report['ran'])} files run code, {len(report['ran_in_memory'])} in memory/")
    print(f"{len(report['through'])} files the request passes through (entries from other files):")
    for name in report["through"]:
        print(f"  {report['entries'][name]:5d}  {name}")
    print(f"{len(report['cycles'])} call cycles between files:")
    for group in report["cycles"]:
        print("  " + " <-> ".join(group))


if __name__ == "__main__":
    main()
