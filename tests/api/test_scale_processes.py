"""Issue 18, requirement 3: several service processes and workers on one store.

Two `unipgen serve --no-run-jobs` and two `unipgen worker` processes run on one fresh PostgreSQL
database, blobs on S3 (moto's server), one Redis for the limits and the workers' jobs run on a
two-node Ray cluster (tests/raycluster.py), as docs/deploy.md sets them up. Through the SDK and plain HTTP, spread over both servers: every job runs exactly once (one
worker each, one attempt, one artifact, and both workers get some; one text model actor on the
cluster made them all, shared by both workers), a job's events stream from
the server that did not take its submit, the artifact's bytes come back from S3 through either,
and the per-key rate limit and the failed-login throttle hold across the two servers.

The four processes start once for the module (the model imports take most of the time on a
small machine) and are killed whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import ADMIN_KEY
from tests.raycluster import LoopbackCluster
from tests.redisserver import free_port, shared_redis_url, unique_prefix
from tests.s3server import S3Server
from unipgen.client import Client
from unipgen.memory import MemoryStore
from unipgen.memory.db import temporary_database
from unipgen.schema.jobs import JobRecord
from unipgen.settings import Settings

pytestmark = [pytest.mark.scale, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
RATE_LIMIT = 30  # per key per minute, across both servers
AUTH_FAILURES = 6  # per client address per minute, across both servers
JOBS = 12


class Child:
    """A `unipgen` command in its own process, its output in a log file (shown when a check fails)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log = log_dir / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "unipgen.cli", *args], env=env, cwd=REPO,
                                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def worker_id(self) -> str | None:
        """The id `unipgen worker` says it took jobs as ("worker ID ready: ..."), once it has."""
        ready = [line.split()[1] for line in self.log.read_text(errors="replace").splitlines()
                 if line.startswith("worker ") and " ready: " in line]
        return ready[0] if ready else None

    def tail(self, lines: int = 30) -> str:
        return f"--- {self.name} (exit {self.process.poll()}) ---\n" + \
            "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Deployment:
    servers: list[str]
    children: list[Child]
    settings: Settings  # the store as the processes see it (for checks from this process)

    @property
    def workers(self) -> list[Child]:
        return [c for c in self.children if c.name.startswith("worker")]

    def logs(self) -> str:
        return "\n".join(child.tail() for child in self.children)


def _wait_healthy(child: Child, url: str, deadline: float, everyone: list[Child]) -> None:
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        dead = [c for c in everyone if c.process.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"{child.name} did not start:\n" + "\n".join(c.tail() for c in everyone))
        time.sleep(0.2)


@pytest.fixture(scope="module")
def deployment(postgres_template: tuple[str, str], s3: S3Server, ray_cluster: LoopbackCluster,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    admin_url, template = postgres_template
    root = tmp_path_factory.mktemp("scale")
    with temporary_database(admin_url, "unipgen_scale", template) as database_url, ExitStack() as stack:
        shared = {"UNIPGEN_DATABASE_URL": database_url, "UNIPGEN_BLOB_URL": s3.blob_url(),
                  "UNIPGEN_REDIS_URL": shared_redis_url(), "UNIPGEN_REDIS_PREFIX": unique_prefix("scale"),
                  "UNIPGEN_ADMIN_KEY": ADMIN_KEY, "UNIPGEN_RATE_LIMIT_PER_MINUTE": str(RATE_LIMIT),
                  "UNIPGEN_AUTH_FAILURES_PER_MINUTE": str(AUTH_FAILURES), "UNIPGEN_ENCODER_WORKERS": "0"}
        env = {**os.environ, **s3.env, **shared, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": str(REPO)}
        children: list[Child] = []
        # The workers drive the jobs' work on the two-node Ray cluster, sharing its model actors,
        # which outlive them: stopped once the workers are (callbacks run last first).
        stack.callback(ray_cluster.stop_model_actors)
        stack.callback(lambda: [child.stop() for child in children])  # killed whatever happens
        ports = [free_port(), free_port()]
        for number, port in enumerate(ports):  # each process its own home, as on its own machine
            children.append(Child(f"serve-{number}", ["serve", "--port", str(port), "--no-run-jobs"],
                                  env | {"UNIPGEN_HOME": str(root / f"serve-{number}")}, root))
        for number in range(2):
            children.append(Child(f"worker-{number}", ["worker", "--poll", "0.2"],
                                  env | ray_cluster.env | {"UNIPGEN_HOME": str(root / f"worker-{number}")}, root))
        servers = [f"http://127.0.0.1:{port}" for port in ports]
        deadline = time.monotonic() + 180
        for child, url in zip(children, servers, strict=False):
            _wait_healthy(child, url, deadline, children)
        for child in children[2:]:  # both workers polling before any job is queued: both get some
            while child.worker_id() is None:
                if child.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("a worker did not start:\n" + "\n".join(c.tail() for c in children))
                time.sleep(0.2)
        settings = Settings(home=root / "checker", database_url=database_url, blob_url=shared["UNIPGEN_BLOB_URL"])
        yield Deployment(servers, children, settings)


@pytest.fixture(scope="module")
def tenant_keys(deployment: Deployment) -> dict[str, str]:
    """Tenant `acme` and one API key per check (each key has its own budget of requests)."""
    with Client(deployment.servers[1], api_key=ADMIN_KEY) as admin:
        admin.create_tenant("acme")
        return {name: admin.create_api_key("acme", name).key for name in ("jobs", "limit")}


def _follow(url: str, key: str, job: str, into: list[tuple[str, JobRecord]]) -> None:
    with Client(url, api_key=key, timeout=120) as api:
        into.extend(api.job_events(job))


def test_jobs_spread_over_two_servers_run_once_each_on_two_workers(deployment: Deployment,
                                                                   tenant_keys: dict[str, str]) -> None:
    first, second = deployment.servers
    key = tenant_keys["jobs"]
    with Client(first, api_key=key) as api:
        api.add_items([{"key": "m1", "text": "Alien (1979) - Horror, Sci-Fi"},
                       {"key": "m2", "text": "Toy Story (1995) - Animation, Comedy"}])
        api.add_events([{"user": "alice", "type": "rate", "item": "m1", "value": 5, "ts": 1_700_000_000}],
                       create_users=True)

    def submit(number: int) -> JobRecord:  # even numbers to the first server, odd to the second
        with Client(deployment.servers[number % 2], api_key=key) as api:
            return api.generate("alice", "text", f"Recommend me a film, take {number}",
                                options={"max_new_tokens": 4, "seed": number}, job_id=f"scale-{number}")

    followed: dict[int, list[tuple[str, JobRecord]]] = {JOBS - 2: [], JOBS - 1: []}
    with ThreadPoolExecutor(4) as pool:
        submitted = list(pool.map(submit, range(JOBS - 2)))
        # The last two are followed at once from the server that did NOT take their submit.
        for number in (JOBS - 2, JOBS - 1):
            submitted.append(submit(number))
        followers = [threading.Thread(target=_follow, args=(deployment.servers[(n + 1) % 2], key, f"scale-{n}",
                                                            followed[n])) for n in followed]
        for thread in followers:
            thread.start()
        for thread in followers:
            thread.join(120)
    assert [job.status for job in submitted] == ["queued"] * JOBS, deployment.logs()

    for number, events in followed.items():
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "end" and kinds.count("end") == 1 and "progress" in kinds, (number, kinds)
        assert events[0][1].status in ("queued", "running") and events[-1][1].status == "succeeded"
        states = [(job.status, job.progress) for _, job in events]
        assert len(set(states)) == len(states)  # one event per change, as it happened in a worker

    with MemoryStore.open(deployment.settings) as store:
        jobs = {job.key: job for job in store.jobs.jobs("acme", limit=100)}
        artifacts = store.artifacts.artifacts("acme", "alice")
    keys = {f"scale-{n}" for n in range(JOBS)}
    assert set(jobs) == keys and {job.status for job in jobs.values()} == {"succeeded"}, deployment.logs()
    assert {job.attempts for job in jobs.values()} == {1}  # claimed once, never retried
    names = {child.worker_id(): child.name for child in deployment.workers}
    ran_by = {key: names.get(job.worker, job.worker) for key, job in jobs.items()}
    assert set(ran_by) == keys and set(ran_by.values()) == {"worker-0", "worker-1"}, ran_by
    for child in deployment.workers:  # each worker says which jobs it ran: the database's account, no overlap
        logged = [line.split(":")[0] for line in child.log.read_text().splitlines() if line.startswith("scale-")]
        assert sorted(logged) == sorted(k for k, name in ran_by.items() if name == child.name), child.tail()
    made = sorted((artifact.meta or {}).get("job", "") for artifact in artifacts)
    assert made == sorted(keys)  # one artifact per job
    # Made on the Ray cluster, by one text model actor that both workers (drivers) shared.
    places = {(artifact.meta["ray"]["node_id"], artifact.meta["ray"]["actor_id"]) for artifact in artifacts}
    assert len(places) == 1, places
    assert {artifact.key for artifact in artifacts} == {jobs[k].result["artifacts"][0] for k in keys}  # type: ignore[index]

    import fsspec

    fs, root = fsspec.core.url_to_fs(deployment.settings.resolved_blob_url())
    fs.invalidate_cache()
    assert {a.blob_sha for a in artifacts} <= {path.rsplit("/", 1)[-1] for path in fs.find(root)}  # in the bucket
    assert not any((child.log.parent / child.name / "blobs").exists() for child in deployment.children)
    for number in range(2):  # each server reads what a worker wrote to S3
        with Client(deployment.servers[number], api_key=key) as api:
            text, media_type = api.artifact_content(jobs[f"scale-{number}"].result["artifacts"][0])  # type: ignore[index]
            assert media_type.startswith("text/plain") and text


def test_the_rate_limit_of_a_key_holds_across_both_servers(deployment: Deployment,
                                                           tenant_keys: dict[str, str]) -> None:
    """Twice the limit, at once over both servers: exactly `RATE_LIMIT` pass (each server alone
    would let 2x through), the rest are 429 with `Retry-After`, and both servers now refuse."""
    headers = {"Authorization": f"Bearer {tenant_keys['limit']}"}
    clients = [httpx.Client(base_url=url, headers=headers, timeout=60) for url in deployment.servers]

    def one(number: int) -> httpx.Response:
        return clients[number % 2].get("/v1/users")

    try:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(one, range(2 * RATE_LIMIT)))
        codes = [a.status_code for a in answers]
        assert codes.count(200) == RATE_LIMIT and codes.count(429) == RATE_LIMIT, codes
        for refused in (a for a in answers if a.status_code == 429):
            assert refused.json()["code"] == "rate_limited" and 1 <= int(refused.headers["Retry-After"]) <= 60
        assert {one(n).status_code for n in range(2)} == {429}
    finally:
        for client in clients:
            client.close()


def test_failed_logins_are_throttled_across_both_servers(deployment: Deployment,
                                                         tenant_keys: dict[str, str]) -> None:
    """`AUTH_FAILURES` wrong keys, alternating servers (each sees half): the address is then
    refused by both, a right key included; another address is not."""
    wrong = {"Authorization": "Bearer upg_00000000_" + "x" * 43}
    right = {"Authorization": f"Bearer {tenant_keys['jobs']}"}
    transport = [httpx.HTTPTransport(local_address="127.0.0.3") for _ in deployment.servers]
    attackers = [httpx.Client(base_url=url, transport=t) for url, t in zip(deployment.servers, transport, strict=True)]
    try:
        codes = [attackers[n % 2].get("/v1/users", headers=wrong).status_code for n in range(AUTH_FAILURES)]
        assert codes == [401] * AUTH_FAILURES
        for attacker in attackers:
            refused = attacker.get("/v1/users", headers=right)
            assert refused.status_code == 429 and "UNIPGEN_AUTH_FAILURES_PER_MINUTE" in refused.json()["message"]
    finally:
        for attacker in attackers:
            attacker.close()
    for url in deployment.servers:
        assert httpx.get(f"{url}/v1/health").status_code == 200
        assert httpx.get(f"{url}/v1/users", headers=right).status_code == 200  # from 127.0.0.1
