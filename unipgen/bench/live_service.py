"""A unipgen service in its own process, for the benchmarks that measure it over HTTP (`service`,
`hardening`): the client's own work and memory are then not counted against the service.

A benchmark module runs itself (`python -m MODULE --serve HOME`); its `_serve` builds the settings it measures
and calls `serve`, which writes the bound port to HOME/port. `ServiceProcess` starts that process
and waits until it answers `/v1/health`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def serve(settings: Any, port_file: Path) -> None:
    """uvicorn serving `create_app(settings)` (tiny profile, no job runner) on a free loopback
    port, written to `port_file` once bound; stops on SIGTERM, running the lifespan's close."""
    import uvicorn

    from unipgen.api import create_app

    app = create_app(settings, profile="tiny", run_jobs=False)
    # proto IPPROTO_TCP, as `uvicorn.run(host=..., port=...)` (`unipgen serve`) gets from getaddrinfo:
    # asyncio sets TCP_NODELAY only on sockets whose proto says TCP. With proto 0 the accepted
    # connections keep Nagle on, and every keep-alive request after the first waits for the
    # client's delayed ACK (about 40 ms on Linux) before the response body goes out.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    scratch = port_file.with_suffix(".tmp")
    scratch.write_text(str(sock.getsockname()[1]))
    scratch.replace(port_file)  # atomic: the parent never reads half a port number
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")).run(sockets=[sock])


class ServiceProcess:
    """`python -m MODULE --serve HOME` started, its `url` once it answers `/v1/health`."""

    def __init__(self, module: str, home: Path, timeout_s: float = 180.0) -> None:
        env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen([sys.executable, "-m", module, "--serve", str(home)],
                                        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        self.url = ""
        deadline = time.monotonic() + timeout_s
        while not self._answers(home / "port"):
            if not self.alive:
                raise RuntimeError(f"the service process exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the service did not start in time")
            time.sleep(0.1)

    def _answers(self, port_file: Path) -> bool:
        import httpx

        if not port_file.exists():
            return False
        self.url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        try:
            return httpx.get(f"{self.url}/v1/health", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.alive:
            self.process.send_signal(signal.SIGTERM)  # uvicorn: graceful, runs the lifespan's close
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
