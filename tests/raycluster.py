"""A real multi-node Ray cluster on loopback, for tests: a head and more nodes started with
`ray start`, each with its own resources (fake GPUs included), token authentication, and a
teardown that stops this cluster's processes only (never `ray stop`, which stops every Ray
process on the machine, other test runs' clusters included).

Every server of every node listens on 127.0.0.1 only. Ray binds loopback only when a node's
address is exactly 127.0.0.1, and its CLI makes that hard for a second node on one machine:

- the head is plain `ray start --head --node-ip-address 127.0.0.1` with
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (as unipgen's own local cluster, see
  `unipgen.orchestrator.ray_cluster`), which keeps 127.0.0.1 as its address;
- a joining node cannot use that switch (`ray start --address` then refuses to join: "multi-node
  clusters are not supported"), and without it `ray start` rewrites 127.0.0.1, in `--address`
  and in `--node-ip-address`, to the machine's LAN address, where the head does not listen.
  `JOIN` runs the same `ray start` command with that rewrite turned off (one private function of
  Ray, replaced in the launched process only).

A node's processes are found by their session: each `ray start` runs as the leader of a new
session, and everything it starts (GCS, raylet, agents, workers) stays in it, even the agents
and workers whose command line Ray rewrites to ``ray::...``. `LoopbackCluster.stop` SIGKILLs
exactly those processes.

`tests/conftest.py` has the session-wide fixture (`ray_cluster`); the drivers that join it
(pytest itself, `unipgen worker` processes) take `LoopbackCluster.env`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).parent / "ray"
#: `ray start` for a node that joins, with Ray's 127.0.0.1 -> LAN address rewrite off (module doc).
JOIN = ("import sys, ray._private.services as services\n"
        "services.resolve_ip_for_localhost = lambda host: host\n"
        "from ray.scripts.scripts import main\n"
        "sys.argv = ['ray', *sys.argv[1:]]\n"
        "main()\n")
#: A lost node is noticed in about 1.5 s instead of Ray's default 15 s (3 s x 5 failed checks).
HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


@dataclass
class RayNode:
    """One node: its Ray id, what it offers, and the session of its `ray start` (its processes)."""

    node_id: str
    session: int
    num_gpus: float
    resources: dict[str, float]
    head: bool = False


@dataclass
class LoopbackCluster:
    """A Ray cluster of nodes started with `ray start` on 127.0.0.1, in a private temp folder."""

    root: Path
    address: str = ""
    nodes: list[RayNode] = field(default_factory=list)
    sessions: list[int] = field(default_factory=list)  # every session started, dead nodes' too

    @property
    def token_path(self) -> Path:
        return self.root / "auth_token"

    @property
    def temp_dir(self) -> Path:
        return self.root / "r"  # short: Unix socket paths are capped at 107 bytes

    @property
    def env(self) -> dict[str, str]:
        """What a driver (unipgen with the Ray executor, or plain Ray) needs in its environment to
        join: the address, the token, and Ray's switch that keeps 127.0.0.1 as it is (unipgen's
        `connect` sets it by itself; a plain `ray.init` would rewrite the address, see the doc)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path),
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "UNIPGEN_RAY_ADDRESS": self.address,
                "UNIPGEN_EXECUTOR": "ray"}

    @property
    def head(self) -> RayNode:
        return next(node for node in self.nodes if node.head)

    def start(self, head: dict[str, Any], *nodes: dict[str, Any]) -> None:
        """Start the head and `nodes` (keyword arguments of `add_node`) at once: a joining node
        waits for the head's GCS by itself, so their start-ups overlap."""
        self.address = f"127.0.0.1:{free_port()}"
        starting = [self._launch(head=True, **head), *(self._launch(**node) for node in nodes)]
        for launched in starting:
            self._started(*launched)

    def add_node(self, num_cpus: int = 1, num_gpus: float = 0, resources: dict[str, float] | None = None) -> RayNode:
        """Start one more node and join it to the head."""
        return self._started(*self._launch(num_cpus, num_gpus, resources))

    def _launch(self, num_cpus: int = 1, num_gpus: float = 0, resources: dict[str, float] | None = None,
                head: bool = False) -> tuple[subprocess.Popen[bytes], Path, RayNode]:
        """Run `ray start` for a node (not waiting for it); see `_started`."""
        if head:
            port = self.address.rsplit(":", 1)[1]
            role = ["--head", "--port", port, "--include-dashboard=false", "--no-monitor", "--dashboard-port",
                    str(free_port()), "--system-config", json.dumps(HEALTH_CHECKS)]
        else:
            role = ["--address", self.address]
        command = [str(RAY), "start"] if head else [sys.executable, "-c", JOIN, "start"]
        command += [*role, "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus), "--num-gpus", str(num_gpus),
                    "--resources", json.dumps(resources or {}), "--temp-dir", str(self.temp_dir),
                    "--object-store-memory", str(100 * 1024 * 1024), "--min-worker-port", "0", "--max-worker-port", "0",
                    "--dashboard-agent-listen-port", str(free_port()), "--include-log-monitor=false",
                    "--disable-usage-stats"]
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               "OMP_NUM_THREADS": "1"}
        env.pop("RAY_ADDRESS", None)
        if head:
            env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        else:
            env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        log = self.root / f"ray-start-{len(self.sessions)}.log"  # a file, not a pipe: daemons may inherit it
        with log.open("w") as output:
            started = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        self.sessions.append(started.pid)
        return started, log, RayNode("", started.pid, num_gpus, resources or {}, head=head)

    def _started(self, started: subprocess.Popen[bytes], log: Path, node: RayNode) -> RayNode:
        """`node` once its `ray start` is done, with its node id (from its raylet's command line)."""
        if started.wait(timeout=180) != 0:
            raise RuntimeError(f"ray start failed ({started.returncode}):\n{log.read_text()[-4000:]}")
        [node.node_id] = [node_id for node_id, pid in self._raylets().items() if session_of(pid) == node.session]
        self.nodes.append(node)
        return node

    def stop_model_actors(self) -> list[str]:
        """Kill the detached model actors that drivers left in unipgen's namespace (they outlive
        their drivers by design), from a driver in its own process: this test process stays off
        the cluster. Returns their names."""
        script = ("import ray, json; from unipgen.orchestrator.ray_cluster import connect; from pathlib import Path; "
                  "import tempfile, os; connect(Path(tempfile.mkdtemp()), os.environ['UNIPGEN_RAY_ADDRESS']); "
                  "named = [a for a in ray.util.list_named_actors(all_namespaces=True) if a['namespace'] == 'unipgen']; "
                  "[ray.kill(ray.get_actor(a['name'], namespace='unipgen')) for a in named]; "
                  "print(json.dumps([a['name'] for a in named]))")
        done = subprocess.run([sys.executable, "-c", script], env={**os.environ, **self.env}, capture_output=True,
                              text=True, timeout=120, check=True)
        return list(json.loads(done.stdout.strip().splitlines()[-1]))

    def raylet_pid(self, node: RayNode) -> int:
        return next(pid for node_id, pid in self._raylets().items() if node_id == node.node_id)

    def kill_raylet(self, node: RayNode) -> None:
        """SIGKILL the node's raylet (its workers and object store go with it): a lost node."""
        os.kill(self.raylet_pid(node), signal.SIGKILL)
        self.nodes.remove(node)

    def _raylets(self) -> dict[str, int]:
        """node id -> pid of this cluster's live raylets."""
        found = {}
        for pid in self.processes():
            args = command_line(pid)
            if args and args[0].endswith("/raylet"):
                node_id = next((arg.split("=", 1)[1] for arg in args if arg.startswith("--node_id=")), None)
                if node_id:
                    found[node_id] = pid
        return found

    def processes(self) -> list[int]:
        """Every live process of this cluster (of the sessions its `ray start` commands led)."""
        return [pid for pid in all_pids() if session_of(pid) in self.sessions]

    def stop(self) -> None:
        """SIGKILL this cluster's processes, then remove its folder. Drivers disconnect first."""
        for _ in range(20):  # a process may start another while we kill: sweep until none is left
            alive = self.processes()
            if not alive:
                break
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def loopback_cluster(head: dict[str, Any], *nodes: dict[str, Any]) -> Iterator[LoopbackCluster]:
    """A running cluster: the head and each of `nodes` (keyword arguments of `add_node`)."""
    root = Path(tempfile.mkdtemp(prefix="upg-rc-", dir="/tmp"))  # 0700: Ray makes its own folders 0777
    cluster = LoopbackCluster(root)
    fd = os.open(cluster.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    try:
        cluster.start(head, *nodes)
        yield cluster
    finally:
        cluster.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def session_of(pid: int) -> int | None:
    """The session id of `pid` (/proc/PID/stat, field 6), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])  # after "pid (comm)": state, ppid, pgrp, session


def command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
