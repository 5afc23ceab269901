"""`unipgen bench service`: what the HTTP service costs over calling the same operation in-process.

Requests per second and p50/p99 latency on loopback, each beside the same store or user-model
call made in this process, on the same data, within the same run:

- event ingest, one event per request: `Client.add_event` (`POST /v1/events`, keep-alive) vs
  `store.events.ingest_events(tenant, [event])`; then 8 client threads at once (each its own
  keep-alive connection) vs 8 threads calling `ingest_events` in-process;
- bulk ingest: 1,000 events per request, `Client.add_events` (`POST /v1/events/bulk`) vs
  `store.events.ingest_events(tenant, events)`, events/s;
- context retrieval: `Client.context` (`POST /v1/users/{user}/context`) vs `UserModel.context`,
  same users and instructions, and the same evidence keys both ways;
- floors: `GET /v1/health` (HTTP only: no key, no store) and `store.keys.authenticate(key)` (the
  key-hash lookup every keyed request makes), to say where a request's time goes.

The service runs as `create_app(settings, profile="tiny", run_jobs=False)` under uvicorn in a
**separate process** (this module, run with `--serve`), on the same SQLite file as the in-process
side. A server thread in this process would share the GIL with the client: every request's
client work (httpx, JSON, pydantic parsing of the answer) would then queue behind the server's,
and the figure would measure one interpreter doing both halves. In two processes each half has
its own interpreter, as with a real client. The machine has 2 cores; the server, the client and
the in-process baseline share them (the two sides take turns, so neither runs beside the other).

Timed sides alternate in blocks (round by round, which side goes first alternates too); the
ratio (HTTP time per op / in-process time per op) is the median of per-round ratios.
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unipgen.bench import live_service
from unipgen.bench.stages import Stage, run_stages

TENANT = "ml"  # the MovieLens sample: contexts
INGEST_TENANT = "ingest"  # events written by the ingest figures (contexts of `ml` stay as they are)
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "movielens-sample"
ADMIN_KEY = "bench-admin-key"
RATE_LIMIT = 10_000_000  # per key per minute: never the limit here
INGEST_ITEMS = 200
THREADS = 8  # client threads of the concurrent figure
BULK = 1_000  # events per bulk request
INSTRUCTIONS = ["write me a postcard about my trip", "a poem about the sea", "a short story about the mountains",
                "a note to a dear friend", "recommend me a film for tonight", "a review of a science fiction film"]
BASE_TS = 1_700_000_000


def run(quick: bool = False) -> dict[str, Any]:
    """All figures; `quick` uses fewer rounds and requests (about half a minute)."""
    import torch

    from unipgen.eval.environment import machine

    torch.set_num_threads(1)
    sizes = _sizes(quick)
    results: dict[str, Any] = {"machine": machine("fastapi", "uvicorn", "httpx", "starlette", "pydantic",
                                                  "sqlalchemy", "torch"), "quick": quick}
    home = Path(tempfile.mkdtemp(prefix="unipgen-service-bench-"))
    started = time.perf_counter()
    print("[0] set-up: store, MovieLens sample, service process...", file=sys.stderr, flush=True)
    bench = _Setup(home)
    try:
        results["setup_s"] = round(time.perf_counter() - started, 1)
        print(f"      {results['setup_s']} s", file=sys.stderr, flush=True)
        results["settings"] = bench.describe() | {"sizes": sizes}
        stages: list[Stage] = [
            ("floors: GET /v1/health, store.keys.authenticate", lambda: bench.floors(**sizes["floors"])),
            ("event ingest, one per request", lambda: bench.ingest_one(**sizes["ingest_one"])),
            (f"event ingest, {THREADS} threads", lambda: bench.ingest_concurrent(**sizes["ingest_concurrent"])),
            (f"bulk ingest, {BULK:,} events per request", lambda: bench.ingest_bulk(**sizes["ingest_bulk"])),
            ("context retrieval", lambda: bench.context(**sizes["context"])),
            ("check: events over HTTP are in the store", bench.check_events),
        ]
        results |= run_stages(stages, show_seconds=True)
    finally:
        bench.close()
        shutil.rmtree(home, ignore_errors=True)
    results["total_s"] = round(time.perf_counter() - started, 1)
    return results


def _sizes(quick: bool) -> dict[str, dict[str, int]]:
    """Rounds and requests per round of each figure (per side)."""
    if quick:
        return {"floors": {"rounds": 2, "per_round": 50},
                "ingest_one": {"rounds": 4, "per_round": 50},
                "ingest_concurrent": {"rounds": 2, "per_thread": 15},
                "ingest_bulk": {"rounds": 3},
                "context": {"rounds": 4, "per_round": 6}}
    return {"floors": {"rounds": 10, "per_round": 500},
            "ingest_one": {"rounds": 20, "per_round": 250},
            "ingest_concurrent": {"rounds": 6, "per_thread": 100},
            "ingest_bulk": {"rounds": 30},
            "context": {"rounds": 20, "per_round": 48}}


# -- timing ------------------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _block(op: Callable[[int], Any], count: int, start: int) -> tuple[float, list[float]]:
    """(seconds in all, per-call seconds) of `op(start)`, `op(start + 1)`... `count` calls."""
    latencies = []
    clock = time.perf_counter
    begin = clock()
    for number in range(start, start + count):
        t0 = clock()
        op(number)
        latencies.append(clock() - t0)
    return clock() - begin, latencies


def _stats(latencies: list[float], elapsed: float, ops: int) -> dict[str, float]:
    return {"per_s": round(ops / elapsed, 1), "p50_ms": _ms(_percentile(latencies, 50)),
            "p99_ms": _ms(_percentile(latencies, 99)), "mean_ms": _ms(elapsed / ops)}


def alternate(http: Callable[[int], Any], local: Callable[[int], Any], rounds: int, per_round: int,
              warmup: int = 5) -> dict[str, Any]:
    """`rounds` blocks of `per_round` calls per side, the sides taking turns (who goes first
    alternates). Calls get numbers 0, 1, 2...: the same numbers on both sides (so the same
    requests), a number never twice on one side. Per side: ops/s over all blocks, p50/p99 of the
    calls; `ratio`: median of the per-round ratios of time per op, HTTP / in-process."""
    for number in range(warmup):
        http(number)
        local(number)
    counter = warmup
    sides: dict[str, dict[str, list[float]]] = {"http": {"t": [], "lat": []}, "local": {"t": [], "lat": []}}
    for number in range(rounds):
        order = [("http", http), ("local", local)] if number % 2 == 0 else [("local", local), ("http", http)]
        for name, op in order:  # the same numbers on both sides: the same requests
            elapsed, latencies = _block(op, per_round, counter)
            sides[name]["t"].append(elapsed)
            sides[name]["lat"] += latencies
        counter += per_round
    ratio = statistics.median(http / local for http, local in zip(sides["http"]["t"], sides["local"]["t"], strict=True))
    ops = rounds * per_round
    return {"http": _stats(sides["http"]["lat"], sum(sides["http"]["t"]), ops),
            "inprocess": _stats(sides["local"]["lat"], sum(sides["local"]["t"]), ops),
            "ratio": round(ratio, 2), "ops_per_side": ops}


def in_threads(work: Callable[[int], int], threads: int) -> tuple[float, int]:
    """(seconds, sum of results) of `work(thread)` run by `threads` threads started together."""
    barrier = threading.Barrier(threads + 1)
    counts = [0] * threads
    errors: list[BaseException] = []

    def body(index: int) -> None:
        barrier.wait()
        try:
            counts[index] = work(index)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
            errors.append(exc)

    workers = [threading.Thread(target=body, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    begin = time.perf_counter()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - begin
    if errors:
        raise errors[0]
    return elapsed, sum(counts)


# -- the service process ---------------------------------------------------------------------------


def _serve(home: Path) -> None:
    """The service process (`python -m unipgen.bench.service --serve HOME`), on the same store as the in-process side."""
    import torch

    from unipgen.settings import Settings

    torch.set_num_threads(1)
    live_service.serve(Settings(home=home / "store", admin_key=ADMIN_KEY, rate_limit_per_minute=RATE_LIMIT),
                       home / "port")


# -- set-up and the figures ---------------------------------------------------------------------------


class _Setup:
    """The store (SQLite in a temp dir) with the MovieLens sample embedded, a second tenant with
    a catalog for ingest, API keys of both, the user model in this process, and the service
    process on the same store."""

    def __init__(self, home: Path) -> None:
        from unipgen.client import Client
        from unipgen.core.usermodel import UserModel
        from unipgen.memory import MemoryStore
        from unipgen.memory.loaders import load_movielens
        from unipgen.settings import Settings

        self.home = home
        self.settings = Settings(home=home / "store", admin_key=ADMIN_KEY, rate_limit_per_minute=RATE_LIMIT)
        self.store = MemoryStore.open(self.settings)
        self.model = UserModel(self.store, "tiny", cache_dir=self.settings.home / "cache")
        load_movielens(self.store, TENANT, SAMPLE, users=8)
        self.users = sorted(self.store.users.list_users(TENANT), key=int)[:8]
        self.model.embed_missing(TENANT)
        self.store.users.create_tenant(INGEST_TENANT)
        self.items = [f"i{number}" for number in range(INGEST_ITEMS)]
        self.store.catalog.add_items(INGEST_TENANT, [{"key": key, "text": f"item {key}"} for key in self.items])
        self.key = self.store.keys.create_api_key(TENANT, "bench").key
        self.ingest_key = self.store.keys.create_api_key(INGEST_TENANT, "bench").key
        self.sent: dict[str, list[tuple[str, int, float]]] = {}  # user → (item, ts, value) of what HTTP wrote
        self.store.indexes.save()  # the service process opens the same files
        self.service = live_service.ServiceProcess(__name__, home, timeout_s=120.0)
        self.client = Client(self.service.url, api_key=self.key, timeout=120)
        self.ingest_client = Client(self.service.url, api_key=self.ingest_key, timeout=120)
        self._clients: list[Any] = []

    def close(self) -> None:
        for client in [self.client, self.ingest_client, *self._clients]:
            client.close()
        self.service.stop()
        self.store.close()

    def describe(self) -> dict[str, Any]:
        import uvicorn.config

        loop = "uvloop" if _importable("uvloop") else "asyncio"
        http = "httptools" if _importable("httptools") else "h11"
        return {"server": f"uvicorn {uvicorn.__version__} in a separate process, 1 worker, {http}, {loop} loop; "
                          "FastAPI sync routes on the anyio thread pool (40 threads)",
                "app": "create_app(settings, profile='tiny', run_jobs=False)",
                "client": "unipgen.client.Client (httpx, keep-alive), one per thread",
                "store": "SQLite (WAL, synchronous=NORMAL) in a temp dir, shared by the service and this process",
                "url": "http://127.0.0.1 (loopback)", "rate_limit_per_minute": RATE_LIMIT,
                "contexts": {"tenant": TENANT, "users": len(self.users), "modality": "text",
                             "instructions": len(INSTRUCTIONS), "data": "MovieLens sample (first 8 users), embedded"},
                "ingest": {"tenant": INGEST_TENANT, "items": INGEST_ITEMS, "event": "rate with a value",
                           "threads": THREADS, "bulk_events": BULK,
                           "users": "separate users per side, so each side's writes can be checked"}}

    # -- helpers ---------------------------------------------------------------------------------

    def event(self, user: str, number: int) -> dict[str, Any]:
        return {"user": user, "type": "rate", "item": self.items[number % INGEST_ITEMS],
                "ts": BASE_TS + number, "value": float(1 + number % 5)}

    def users_for(self, label: str, count: int) -> list[str]:
        users = [f"{label}-{number}" for number in range(count)]
        self.store.users.create_users(INGEST_TENANT, users)
        return users

    def remember(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.sent.setdefault(event["user"], []).append((event["item"], event["ts"], event["value"]))

    # -- floors ------------------------------------------------------------------------------------

    def floors(self, rounds: int, per_round: int) -> dict[str, Any]:
        """GET /v1/health over HTTP (no key, no store) beside `store.keys.authenticate(key)` in-process."""
        found = alternate(lambda _: self.client.health(), lambda _: self.store.keys.authenticate(self.key),
                          rounds, per_round)
        return {"health_http": found["http"], "authenticate_inprocess": found["inprocess"],
                "floors_settings": {"rounds": rounds, "per_round": per_round}}

    # -- figure 1: one event per request ---------------------------------------------------------------

    def ingest_one(self, rounds: int, per_round: int) -> dict[str, Any]:
        http_user, local_user = self.users_for("one-http", 1) + self.users_for("one-local", 1)

        def http(number: int) -> None:
            event = self.event(http_user, number)
            if self.ingest_client.add_event(event) != 1:
                raise RuntimeError("add_event wrote no event")
            self.remember([event])

        def local(number: int) -> None:
            self.store.events.ingest_events(INGEST_TENANT, [self.event(local_user, number)])

        found = alternate(http, local, rounds, per_round)
        return {"ingest_one": found, "ingest_one_ratio": found["ratio"],
                "ingest_one_http_per_s": found["http"]["per_s"], "ingest_one_http_p99_ms": found["http"]["p99_ms"],
                "ingest_one_inprocess_per_s": found["inprocess"]["per_s"],
                "ingest_one_inprocess_p99_ms": found["inprocess"]["p99_ms"]}

    # -- figure 1b: 8 threads at once ----------------------------------------------------------------------

    def ingest_concurrent(self, rounds: int, per_thread: int) -> dict[str, Any]:
        """`THREADS` client threads, each its own keep-alive connection and user, vs `THREADS`
        threads calling `ingest_events` in this process; alternating rounds."""
        from unipgen.client import Client

        http_users = self.users_for("conc-http", THREADS)
        local_users = self.users_for("conc-local", THREADS)
        clients = [Client(self.service.url, api_key=self.ingest_key, timeout=120) for _ in range(THREADS)]
        self._clients += clients
        latencies: dict[str, list[float]] = {"http": [], "local": []}
        lock = threading.Lock()
        offset = [0]

        def http_work(thread: int) -> int:
            client, user, mine, base = clients[thread], http_users[thread], [], offset[0]
            for number in range(base, base + per_thread):
                event = self.event(user, number)
                t0 = time.perf_counter()
                if client.add_event(event) != 1:
                    raise RuntimeError("add_event wrote no event")
                mine.append(time.perf_counter() - t0)
                with lock:
                    self.remember([event])
            with lock:
                latencies["http"] += mine
            return per_thread

        def local_work(thread: int) -> int:
            user, mine, base = local_users[thread], [], offset[0]
            for number in range(base, base + per_thread):
                event = self.event(user, number)
                t0 = time.perf_counter()
                self.store.events.ingest_events(INGEST_TENANT, [event])
                mine.append(time.perf_counter() - t0)
            with lock:
                latencies["local"] += mine
            return per_thread

        for client, user in zip(clients, http_users, strict=True):  # warm-up: connections open
            event = self.event(user, 10**6)
            client.add_event(event)
            self.remember([event])
        times: dict[str, list[float]] = {"http": [], "local": []}
        for number in range(rounds):
            order = [("http", http_work), ("local", local_work)]
            for name, work in order if number % 2 == 0 else order[::-1]:
                elapsed, done = in_threads(work, THREADS)
                offset[0] += per_thread
                assert done == THREADS * per_thread
                times[name].append(elapsed)
        ops = rounds * THREADS * per_thread
        ratio = statistics.median(http / local for http, local in zip(times["http"], times["local"], strict=True))
        found: dict[str, Any] = {"http": _stats(latencies["http"], sum(times["http"]), ops),
                 "inprocess": _stats(latencies["local"], sum(times["local"]), ops),
                 "ratio": round(ratio, 2), "ops_per_side": ops, "threads": THREADS}
        return {"ingest_concurrent": found, "ingest_concurrent_ratio": found["ratio"],
                "ingest_concurrent_http_per_s": found["http"]["per_s"],
                "ingest_concurrent_http_p99_ms": found["http"]["p99_ms"],
                "ingest_concurrent_inprocess_per_s": found["inprocess"]["per_s"]}

    # -- figure 2: bulk ----------------------------------------------------------------------------------

    def ingest_bulk(self, rounds: int) -> dict[str, Any]:
        """One request of `BULK` events (8 users) vs the same `ingest_events` call, alternating."""
        http_users = self.users_for("bulk-http", 8)
        local_users = self.users_for("bulk-local", 8)

        def batch(users: list[str], number: int) -> list[dict[str, Any]]:
            return [self.event(users[n % len(users)], number * BULK + n) for n in range(BULK)]

        def http(number: int) -> None:
            events = batch(http_users, number)
            if self.ingest_client.add_events(events) != BULK:
                raise RuntimeError("add_events wrote fewer events than sent")
            self.remember(events)

        def local(number: int) -> None:
            self.store.events.ingest_events(INGEST_TENANT, batch(local_users, number))

        found = alternate(http, local, rounds, 1, warmup=1)
        for side in ("http", "inprocess"):  # one request = BULK events
            found[side]["events_per_s"] = round(found[side]["per_s"] * BULK, 0)
        return {"ingest_bulk": found, "ingest_bulk_ratio": found["ratio"],
                "ingest_bulk_http_events_per_s": found["http"]["events_per_s"],
                "ingest_bulk_inprocess_events_per_s": found["inprocess"]["events_per_s"]}

    # -- figure 3: context ---------------------------------------------------------------------------

    def context(self, rounds: int, per_round: int) -> dict[str, Any]:
        """`Client.context` vs `UserModel.context`, request `n` is user n % 8 and instruction
        n % 6 on both sides; evidence keys compared on every pair of equal requests."""
        requests = [(user, instruction) for instruction in INSTRUCTIONS for user in self.users]
        http_keys: dict[int, Any] = {}
        local_keys: dict[int, Any] = {}

        def keys(context: Any) -> tuple[Any, ...]:
            return (tuple((e.kind, e.key) for e in context.evidence), tuple(context.provenance),
                    tuple(p.space for p in context.preferences))

        def http(number: int) -> None:
            user, instruction = requests[number % len(requests)]
            http_keys[number % len(requests)] = keys(self.client.context(user, "text", instruction))

        def local(number: int) -> None:
            user, instruction = requests[number % len(requests)]
            local_keys[number % len(requests)] = keys(self.model.context(TENANT, user, "text", instruction))

        found = alternate(http, local, rounds, per_round, warmup=len(requests))  # warm-up: every request
        compared = sorted(set(http_keys) & set(local_keys))
        same = all(http_keys[n] == local_keys[n] for n in compared)
        evidence = sum(len(http_keys[n][0]) for n in compared)
        return {"context": found | {"requests_compared": len(compared), "same_evidence_keys": same,
                                    "evidence_items_compared": evidence},
                "context_ratio": found["ratio"], "context_http_per_s": found["http"]["per_s"],
                "context_http_p99_ms": found["http"]["p99_ms"], "context_inprocess_per_s": found["inprocess"]["per_s"],
                "context_inprocess_p99_ms": found["inprocess"]["p99_ms"], "context_same_evidence_keys": same}

    # -- check ---------------------------------------------------------------------------------------

    def check_events(self) -> dict[str, Any]:
        """Every event the HTTP side wrote, read back from the store (the service's writes,
        seen by this process's store): same items, times and values, none missing or extra."""
        from datetime import UTC

        sent = written = 0
        missing_users = []
        for user, events in self.sent.items():
            stored = sorted((e.item, int(e.ts.astimezone(UTC).timestamp()), e.value)
                            for e in self.store.events.events(INGEST_TENANT, user))
            expected = sorted((item, ts, value) for item, ts, value in events)
            sent += len(expected)
            written += len(stored)
            if stored != expected:
                missing_users.append(user)
        return {"http_events_sent": sent, "http_events_in_store": written,
                "http_events_all_stored": not missing_users and sent == written, "http_events_mismatched_users":
                missing_users}


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":  # the service process: `python -m unipgen.bench.service --serve HOME`
    _serve(Path(sys.argv[sys.argv.index("--serve") + 1]))
