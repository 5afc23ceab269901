"""CI's rule that nothing skips: with UNIPGEN_NO_SKIPS=1 a skipped test fails the run (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(folder: Path, no_skips: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UNIPGEN_NO_SKIPS": no_skips}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(folder), str(folder)], capture_output=True, text=True, env=env, cwd=ROOT)


def test_a_skip_fails_the_run_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text("import pytest\n\ndef test_ok():\n    pass\n\n"
                                             "def test_skipped():\n    pytest.skip('no tool here')\n")
    assert _run(tmp_path, "0").returncode == 0
    failed = _run(tmp_path, "1")
    assert failed.returncode == 1 and "1 test(s) skipped, which fails this run" in failed.stdout
    (tmp_path / "test_sample.py").write_text("def test_ok():\n    pass\n")
    assert _run(tmp_path, "1").returncode == 0
