"""Local stand-ins for the scale path's shared services, for its tests and `unipgen bench scale`.

An S3-compatible server on 127.0.0.1: moto's server mode (a dev dependency: `pip install
'moto[server]'`), in its own process, so that `unipgen serve` and `unipgen worker` child
processes reach it too.

unipgen reaches S3 the way a deployment does: `UNIPGEN_BLOB_URL=s3://bucket/prefix` through
fsspec and s3fs, with the endpoint and credentials in the standard AWS variables
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...), which `S3Server.env` holds.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from unipgen.errors import MissingDependencyError


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    env: dict[str, str] = field(default_factory=dict)

    def blob_url(self, prefix: str | None = None) -> str:
        """A fresh prefix in the bucket: one store's blobs."""
        return f"s3://{self.bucket}/{prefix or uuid.uuid4().hex}"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(process: subprocess.Popen[bytes], port: int, what: str, timeout_s: float = 30.0) -> None:
    """Return once `process` accepts connections on 127.0.0.1:`port`; raise if it exits or
    `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start on port {port}") from None
            time.sleep(0.05)


@contextmanager
def s3_server(bucket: str = "unipgen-test") -> Iterator[S3Server]:
    """Start moto's S3 server on a free loopback port with one bucket; stop it on exit."""
    try:
        import moto.server  # noqa: F401  (run below as its own process)
    except ImportError as exc:
        raise MissingDependencyError("a local S3 server needs moto: pip install 'moto[server]'") from exc
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(process, port, "moto's S3 server")
        _make_bucket(endpoint, bucket, env)
        yield S3Server(endpoint=endpoint, bucket=bucket, env=env)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _make_bucket(endpoint: str, bucket: str, env: dict[str, str]) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(key=env["AWS_ACCESS_KEY_ID"], secret=env["AWS_SECRET_ACCESS_KEY"],
                           endpoint_url=endpoint, skip_instance_cache=True)
    fs.mkdir(bucket)


@contextmanager
def aws_environment(server: S3Server) -> Iterator[None]:
    """Point this process's S3 clients at `server` (s3fs reads the standard AWS variables)."""
    saved = {name: os.environ.get(name) for name in server.env}
    os.environ.update(server.env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
