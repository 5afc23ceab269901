"""Which files of the package one `unipgen generate USER -m image` runs code in (issue 16's measure).

A profiler hook records every function call into a file under unipgen/ while the CLI command
runs on a two-user MovieLens sample (tiny profile); module-level import code is left out.
Prints how many files ran code, how many in memory/, which ran only a constructor, and the
files the request passes through: those in which a function calls into another package file
(the rest are leaves: settings, tables, checks).

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python tools/trace_request.py
"""
import os
import sys
import tempfile

os.environ["OMP_NUM_THREADS"] = "1"
from typer.testing import CliRunner

from tests.conftest import SAMPLE
from unipgen.cli import app

home = tempfile.mkdtemp()
r = CliRunner().invoke(app, ["--home", home, "ingest", "movielens", str(SAMPLE), "--users", "2"])
assert r.exit_code == 0, r.output
PKG = os.path.join(os.getcwd(), "unipgen") + os.sep
seq = []
steps = []  # (depth in package frames, file) of every call
def tracer(frame, event, arg):
    if event == "call":
        f = frame.f_code.co_filename
        if f.startswith(PKG):
            rel = f[len(PKG):]
            if not seq or seq[-1][0] != rel:
                seq.append((rel, frame.f_code.co_name))
            if frame.f_code.co_name != "<module>":
                depth, outer = 0, frame.f_back
                while outer is not None:
                    depth += outer.f_code.co_filename.startswith(PKG)
                    outer = outer.f_back
                steps.append((depth, rel))
sys.setprofile(tracer)
r = CliRunner().invoke(app, ["--home", home, "generate", "1", "-m", "image", "-i", "a poster for my movie night", "--json"])
sys.setprofile(None)
assert r.exit_code == 0, r.output
calls = [(f, fn) for f, fn in seq if fn != "<module>"]
files = list(dict.fromkeys(f for f, _ in calls))
only_init = [f for f in files if {fn for g, fn in calls if g == f} <= {"__init__"}]
print(len(files), "files run code;", len([f for f in files if f.startswith("memory/")]), "in memory/;", len(only_init), "only __init__:", only_init)
print(files)
through = list(dict.fromkeys(f for (d, f), (d2, f2) in zip(steps, steps[1:]) if d2 > d and f2 != f))
print(len(through), "files the request passes through:", through)
