"""Every example in examples/ runs, and the README shows the store example as it is on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_quickstart_store_runs(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart_store.py"), str(tmp_path)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "alice.zip").is_file()


def test_readme_snippet_matches_the_example() -> None:
    readme = (REPO / "README.md").read_text()
    example = (REPO / "examples" / "quickstart_store.py").read_text()
    for line in readme.split("```python")[1].split("```")[0].strip().splitlines()[4:]:
        if "alice.zip" in line:
            continue  # the example writes into its home directory
        assert line.strip() in example, line
