"""`unipgen worker` outlives a database outage: it waits, backing off, and takes jobs again once
the database answers (before, the first failed claim ended the process).

The outage is real: the worker reaches PostgreSQL through a TCP proxy in this test, which is
stopped (every connection cut, the port closed) and started again on the same port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.redisserver import free_port
from unipgen.memory import MemoryStore
from unipgen.schema.jobs import GenerateSpec
from unipgen.settings import Settings

pytestmark = [pytest.mark.scale, pytest.mark.postgres]


class Proxy:
    """Forwards 127.0.0.1:`port` to `target`; `stop` cuts every connection and closes the port."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self.sockets: list[socket.socket] = []
        self.listener: socket.socket | None = None

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        assert self.listener is not None
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
        self.listener.close()
        for end in self.sockets:
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()
        self.sockets = []


def wait_for(check, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s; worker log:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def test_a_worker_waits_out_a_database_outage_and_runs_jobs_after_it(postgres_database: str, tmp_path: Path) -> None:
    direct = Settings(home=tmp_path / "direct", database_url=postgres_database, blob_url=str(tmp_path / "blobs"))
    with MemoryStore.open(direct) as store:
        store.users.create_tenant("t")
        store.users.create_users("t", ["u"])
    url = make_url(postgres_database)
    proxy = Proxy(free_port(), (url.host or "127.0.0.1", url.port or 5432))
    proxy.start()
    env = os.environ | {"UNIPGEN_DATABASE_URL": url.set(port=proxy.port).render_as_string(hide_password=False),
                        "UNIPGEN_BLOB_URL": str(tmp_path / "blobs"), "OMP_NUM_THREADS": "1"}
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "unipgen.cli", "--home", str(tmp_path / "worker"), "worker",
                                   "--poll", "0.1"], env=env, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: " ready: " in log.read_text(errors="replace"), 120, "the worker was not ready", log)
        proxy.stop()
        wait_for(lambda: "did not answer" in log.read_text(errors="replace"), 30,
                 "the worker did not notice the outage", log)
        time.sleep(1.0)
        assert worker.poll() is None, log.read_text(errors="replace")  # waiting, not dead
        with MemoryStore.open(direct) as store:  # queued while the worker cannot see the database
            key = store.jobs.submit_job("t", "u", GenerateSpec(modality="text", instruction="a haiku").model_dump(
                mode="json"), key="after-outage").key
        proxy.start()
        with MemoryStore.open(direct) as store:
            wait_for(lambda: store.jobs.job("t", key).done, 120, "the job queued during the outage did not run", log)
            job = store.jobs.job("t", key)
        assert job.status == "succeeded" and job.attempts == 1
        assert "the database answers again" in log.read_text(errors="replace")
    finally:
        worker.terminate()
        try:
            worker.wait(15)
        except subprocess.TimeoutExpired:
            worker.kill()
        proxy.listener and proxy.listener.close()
