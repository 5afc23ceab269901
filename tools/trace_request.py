"""Which files of the package one `unipgen generate USER -m image` runs code in (issue 16's measure).

A profiler hook records every function call into a file under unipgen/ while the CLI command
runs on a two-user MovieLens sample (tiny profile); module-level import code is left out.
Prints how many files ran code, how many in memory/, and which ran only a constructor.

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
def tracer(frame, event, arg):
    if event == "call":
        f = frame.f_code.co_filename
        if f.startswith(PKG):
            rel = f[len(PKG):]
            if not seq or seq[-1][0] != rel:
                seq.append((rel, frame.f_code.co_name))
sys.setprofile(tracer)
r = CliRunner().invoke(app, ["--home", home, "generate", "1", "-m", "image", "-i", "a poster for my movie night", "--json"])
sys.setprofile(None)
assert r.exit_code == 0, r.output
calls = [(f, fn) for f, fn in seq if fn != "<module>"]
files = list(dict.fromkeys(f for f, _ in calls))
only_init = [f for f in files if {fn for g, fn in calls if g == f} <= {"__init__"}]
print(len(files), "files run code;", len([f for f in files if f.startswith("memory/")]), "in memory/;", len(only_init), "only __init__:", only_init)
print(files)
