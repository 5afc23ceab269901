"""`unipgen bench scale`: the scale path (PostgreSQL, blobs on S3, several processes) beside the
embedded default (SQLite, a local blob folder, one process), in one run.

Three figures, each measured with 1, 2 and 4 processes working at once on the scale path and
with one process on the embedded default:

- **ingest events/s**: each process writes its own users' ratings in bulk calls of 1,000 events
  (`store.events.ingest_events`, one transaction each); all events over the time from the first
  process's start to the last one's end.
- **context p50/p99 ms**: each process builds contexts (`UserModel.context`, the tiny profile's
  MiniLM, warm) for the MovieLens sample's users; the latencies of all processes pooled, and
  contexts/s over the same span as ingest.
- **jobs/s**: that many `unipgen worker` processes drain a queue of tiny-profile text generation
  jobs submitted at once, after a warm-up round; jobs over the time from the submission to the
  last job's `finished_at`. With a Ray address the workers use the Ray executor on that cluster.

Every process opens its own store on the same database and blob URL (its faiss index files stay
in its own data dir: they are a cache of the `embeddings` table). Processes are started first and
released together once loaded, so start-up is not counted. On a 2-core machine, 2 and 4
processes compete for the cores: the figures then say what the shared services cost and whether
anything serializes (locks, claims), not how a larger machine scales.

Children are this module run as `python -m unipgen.bench.scale --child ROLE CONFIG`: they print
`@@ready` once loaded, wait for a line on stdin, then print `@@` and their result as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timezone
from pathlib import Path
from typing import Any

TENANT = "ml"
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "movielens-sample"
BULK = 1_000
BASE_TS = 1_700_000_000
INSTRUCTIONS = ["write me a postcard about my trip", "a poem about the sea", "a short story about the mountains",
                "a note to a dear friend", "recommend me a film for tonight", "a review of a science fiction film"]
PROCESSES = (1, 2, 4)


def run(quick: bool = False, postgres: str | None = None, blob_url: str | None = None, ray_address: str | None = None,
        processes: tuple[int, ...] = PROCESSES) -> dict[str, Any]:
    """Every figure. `postgres`: an admin URL where a fresh database is made (default
    `UNIPGEN_TEST_POSTGRES_URL`); `blob_url`: an S3 URL whose credentials are in the environment
    (default: moto's S3 server started on loopback); `ray_address`: workers use the Ray executor
    there (default: the inline executor in each worker)."""
    from unipgen.bench.scale_services import aws_environment, s3_server
    from unipgen.errors import InvalidInputError
    from unipgen.eval.environment import machine
    from unipgen.memory.db import temporary_database

    admin = postgres or os.environ.get("UNIPGEN_TEST_POSTGRES_URL")
    if not admin:
        raise InvalidInputError("bench scale needs PostgreSQL: pass --postgres URL (a role that may create databases)")
    sizes = _sizes(quick)
    started = time.monotonic()
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="unipgen-scale-")))
        if blob_url is None:
            server = stack.enter_context(s3_server())
            stack.enter_context(aws_environment(server))
            blob_url = server.blob_url("bench")
        database = stack.enter_context(temporary_database(admin, "unipgen_bench_scale"))
        embedded = {"home": str(root / "embedded")}
        shared = {"database_url": database, "blob_url": blob_url}
        configurations: list[tuple[str, dict[str, str], int, str | None]] = [("embedded", embedded, 1, None)]
        configurations += [("scale", shared, count, ray_address) for count in processes]
        for settings in (embedded, shared):
            _load(settings, root)
        rows = [_measure(name, settings, count, ray, sizes, root) for name, settings, count, ray in configurations]
        storage = _storage(database)
    base = rows[0]
    for row in rows:
        row["ratio_to_embedded"] = {key: _ratio(row[key], base[key]) for key in
                                    ("ingest_events_per_s", "context_p99_ms", "jobs_per_s")}
    return {"machine": machine("sqlalchemy", "numpy"), "quick": quick, "sizes": sizes,
            "services": {"database": "PostgreSQL (a fresh database)", "blobs": blob_url.split("/")[0] + "//...",
                         "executor": f"ray at {ray_address}" if ray_address else "inline in each worker"},
            "rows": rows, "postgres_storage": storage, "wall_s": round(time.monotonic() - started, 1)}


def _storage(database_url: str) -> dict[str, dict[str, float]]:
    """Rows and bytes per row (table, indexes and TOAST) of the tables that grow with a tenant,
    as PostgreSQL stores them after the run: the figures docs/deploy.md extrapolates from."""
    from sqlalchemy import text

    from unipgen.memory.db import make_engine

    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            sizes = {}
            for table in ("behavior_events", "users", "embeddings", "documents", "artifacts", "jobs"):
                rows = connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                size = connection.execute(text(f"SELECT pg_total_relation_size('{table}')")).scalar_one()
                sizes[table] = {"rows": rows, "bytes_per_row": round(size / rows, 1) if rows else 0.0}
            return sizes
    finally:
        engine.dispose()


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"events": 4_000, "contexts": 24, "jobs": 8, "sample_users": 4}
    return {"events": 40_000, "contexts": 200, "jobs": 32, "sample_users": 20}


def _ratio(value: float, base: float) -> float | None:
    return round(value / base, 3) if base else None


def _load(settings: dict[str, Any], root: Path) -> None:
    """The MovieLens sample into the store, its texts embedded, its behavior space fitted."""
    from unipgen.core.usermodel import UserModel
    from unipgen.memory import MemoryStore
    from unipgen.memory.loaders import load_movielens
    from unipgen.settings import Settings

    with MemoryStore.open(Settings(**{"home": str(root / "setup"), **settings})) as store:
        load_movielens(store, TENANT, SAMPLE)
        model = UserModel(store, "tiny", cache_dir=root / "models")
        model.fit(TENANT)


def _measure(name: str, settings: dict[str, Any], count: int, ray_address: str | None, sizes: dict[str, int],
             root: Path) -> dict[str, Any]:
    label = f"{name}-{count}"
    # The embedded store is its home; on the scale path each process has its own (index files).
    homes = [settings.get("home") or str(root / label / f"p{index}") for index in range(count)]
    for home in homes:  # one cache of built models for every process
        Path(home).mkdir(parents=True, exist_ok=True)
        if not (Path(home) / "cache").exists():
            (Path(home) / "cache").symlink_to(root / "models")
    base = {"settings": settings, "cache": str(root / "models"), "sizes": sizes}
    ingest = _children("ingest", [base | {"home": home, "label": f"{label}-{i}", "count": count}
                                  for i, home in enumerate(homes)])
    contexts = _children("context", [base | {"home": home, "index": i, "count": count}
                                     for i, home in enumerate(homes)])
    latencies = sorted(ms for result in contexts for ms in result["latencies_ms"])
    row: dict[str, Any] = {"configuration": name, "processes": count,
                           "ingest_events_per_s": round(sizes["events"] / _span(ingest), 1),
                           "context_p50_ms": round(_percentile(latencies, 50), 2),
                           "context_p99_ms": round(_percentile(latencies, 99), 2),
                           "contexts_per_s": round(len(latencies) / _span(contexts), 2)}
    row |= _jobs(settings, homes, ray_address, sizes)
    return row


def _span(results: list[dict[str, Any]]) -> float:
    return max(r["end"] for r in results) - min(r["start"] for r in results)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))]


def _children(role: str, configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start one child per config, release them together once all are loaded, collect results."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    processes = [subprocess.Popen([sys.executable, "-m", "unipgen.bench.scale", "--child", role, json.dumps(config)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                 for config in configs]
    try:
        for process in processes:
            _expect(process, "ready")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [json.loads(_expect(process, "")) for process in processes]
        for process in processes:
            process.wait(60)
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


def _expect(process: subprocess.Popen[str], prefix: str) -> str:
    """The child's next protocol line (`@@...`) after `prefix`, skipping anything else it prints."""
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("@@" + prefix):
            return line[2 + len(prefix):].strip()
    raise RuntimeError(f"a bench child exited with {process.wait()} before answering")


def _jobs(settings: dict[str, Any], homes: list[str], ray_address: str | None, sizes: dict[str, int]) -> dict[str, Any]:
    """`len(homes)` `unipgen worker` processes drain a warm-up round, then `sizes["jobs"]` jobs."""
    from unipgen.memory import MemoryStore
    from unipgen.settings import Settings

    with MemoryStore.open(Settings(**{"home": homes[0], **settings})) as store, _workers(settings, homes, ray_address):
        users = _sample_users(store, sizes)
        _drain(store, users, 2 * len(homes), "warm")
        submitted, finished, workers = _drain(store, users, sizes["jobs"], "timed")
    seconds = max(finished) - submitted
    return {"jobs_per_s": round(sizes["jobs"] / seconds, 3), "jobs_s": round(seconds, 2),
            "jobs_by_worker": sorted(workers.values(), reverse=True)}


def _drain(store: Any, users: list[str], count: int, label: str) -> tuple[float, list[float], dict[str, int]]:
    """Queue `count` text jobs at once and wait until all are done; (submit time, finish times, jobs per worker)."""
    from unipgen.schema.jobs import GenerateSpec

    submitted = time.time()
    keys = [store.jobs.submit_job(TENANT, users[n % len(users)], GenerateSpec(
        modality="text", instruction=INSTRUCTIONS[n % len(INSTRUCTIONS)]).model_dump(mode="json"),
        key=f"{label}-{os.getpid()}-{time.monotonic_ns()}-{n}").key for n in range(count)]
    deadline = time.monotonic() + 120 + 30 * count
    while True:
        jobs = [store.jobs.job(TENANT, key) for key in keys]
        if all(job.done for job in jobs):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(not j.done for j in jobs)} of {count} jobs still not done")
        time.sleep(0.05)
    failed = [job for job in jobs if job.status != "succeeded"]
    if failed:
        raise RuntimeError(f"job {failed[0].key} ended {failed[0].status}: {failed[0].error}")
    workers: dict[str, int] = {}
    for job in jobs:
        workers[job.worker or "?"] = workers.get(job.worker or "?", 0) + 1
    finished = [job.finished_at.replace(tzinfo=job.finished_at.tzinfo or timezone.utc).timestamp()
                for job in jobs if job.finished_at]
    return submitted, finished, workers


@contextmanager
def _workers(settings: dict[str, Any], homes: list[str], ray_address: str | None) -> Iterator[None]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "UNIPGEN_EXECUTOR": "ray" if ray_address else "inline"}
    env |= {f"UNIPGEN_{name.upper()}": str(value) for name, value in settings.items() if name != "home"}
    if ray_address:
        env["UNIPGEN_RAY_ADDRESS"] = ray_address
    processes = [subprocess.Popen([sys.executable, "-m", "unipgen", "--home", home, "worker", "--profile", "tiny",
                                   "--poll", "0.05"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for home in homes]
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def _sample_users(store: Any, sizes: dict[str, int]) -> list[str]:
    """The MovieLens sample's users (numeric ids; the ingest figures add others)."""
    return [user for user in store.users.list_users(TENANT) if user.isdigit()][: sizes["sample_users"]]


# -- the children ---------------------------------------------------------------------------------


def _child(role: str, config: dict[str, Any]) -> dict[str, Any]:
    from unipgen.memory import MemoryStore
    from unipgen.settings import Settings

    with MemoryStore.open(Settings(**{"home": config["home"], **config["settings"]})) as store:
        if role == "ingest":
            return _ingest(store, config)
        return _contexts(store, config)


def _go() -> None:
    print("@@ready", flush=True)
    sys.stdin.readline()


def _ingest(store: Any, config: dict[str, Any]) -> dict[str, Any]:
    items = sorted(store.catalog.item_texts(TENANT))[:200]
    total = config["sizes"]["events"] // config["count"]
    events = [{"user": f"{config['label']}-{n // 50}", "type": "rate", "item": items[n % len(items)],
               "ts": BASE_TS + n, "value": float(1 + n % 5)} for n in range(total)]
    batches = [events[start:start + BULK] for start in range(0, total, BULK)]
    _go()
    start = time.time()
    for batch in batches:
        store.events.ingest_events(TENANT, batch, create_users=True)
    return {"start": start, "end": time.time(), "events": total}


def _contexts(store: Any, config: dict[str, Any]) -> dict[str, Any]:
    from unipgen.core.usermodel import UserModel

    model = UserModel(store, "tiny", cache_dir=Path(config["cache"]))
    users = _sample_users(store, config["sizes"])
    for user in users[:2]:  # warm: models loaded, indexes built
        model.context(TENANT, user, "text", INSTRUCTIONS[0])
    count = config["sizes"]["contexts"] // config["count"]
    _go()
    latencies, start = [], time.time()
    for n in range(count):
        begin = time.perf_counter()
        model.context(TENANT, users[(n + config["index"]) % len(users)], "text", INSTRUCTIONS[n % len(INSTRUCTIONS)])
        latencies.append((time.perf_counter() - begin) * 1000)
    return {"start": start, "end": time.time(), "latencies_ms": latencies}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print("@@" + json.dumps(_child(sys.argv[2], json.loads(sys.argv[3]))), flush=True)
    else:
        print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
