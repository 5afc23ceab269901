"""Redis for the tests of the shared rate limit: the machine's server (127.0.0.1:6379, or
`UNIPGEN_TEST_REDIS_URL`), each test under a prefix of its own so that parallel runs never meet
(and nothing is flushed); and a private `redis-server` on a free port, for the tests that stop it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from unipgen.bench.scale_services import free_port, wait_for_port

__all__ = ["free_port", "private_redis", "shared_redis_url", "unique_prefix"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def shared_redis_url() -> str:
    """The machine's Redis, where the tests keep their keys under `unique_prefix()`."""
    return os.environ.get("UNIPGEN_TEST_REDIS_URL", DEFAULT_URL)


def unique_prefix(name: str = "test") -> str:
    """A key namespace no other test run uses."""
    return f"unipgen-test:{name}:{uuid.uuid4().hex[:12]}"




@contextmanager
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `redis-server` of this test only (no persistence) on a free loopback port: its URL and
    process; stopped on exit if still running."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(process, port, "redis-server", timeout_s=10)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)
