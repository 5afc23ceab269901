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


def test_service_quickstart_runs_against_unipgen_serve(tmp_path: Path) -> None:
    """`unipgen keys create`, then `unipgen serve` as a real process, then the SDK example."""
    import json
    import os
    import socket
    import time

    import httpx
    import pytest

    pytest.importorskip("uvicorn")
    env = {**os.environ, "UNIPGEN_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    created = subprocess.run([sys.executable, "-m", "unipgen.cli", "keys", "create", "quickstart", "--tenant", "acme",
                              "--json"], capture_output=True, text=True, check=True, env=env)
    key = json.loads(created.stdout)["key"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "unipgen.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"unipgen serve did not start:\n{server.stdout.read() if server.stdout else ''}")
            time.sleep(0.2)
        done = subprocess.run([sys.executable, str(REPO / "examples" / "service_quickstart.py"), url, key],
                              capture_output=True, text=True, check=True, env=env, timeout=300)
        status, method, media_type = done.stdout.splitlines()[0].split(" ", 2)
        assert status == "succeeded" and method == "rag_prompt" and media_type.startswith("text/plain")
        sources = done.stdout.splitlines()[1]  # the rating's shares: model, prior, neighbours
        assert all(f"'{name}'" in sources for name in ("model", "prior", "neighbours"))
        assert done.stdout.splitlines()[2] == "[]"
    finally:
        server.terminate()
        server.wait(30)


def test_service_doc_snippet_matches_the_example() -> None:
    doc = (REPO / "docs" / "service.md").read_text()
    example = (REPO / "examples" / "service_quickstart.py").read_text()
    snippet = doc.split("```python")[1].split("```")[0].strip().splitlines()
    assert len(snippet) > 5 and all(line.strip() in example for line in snippet)
