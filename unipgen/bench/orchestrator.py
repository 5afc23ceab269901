"""`unipgen bench orchestrator`: what running generations as jobs costs, and what the Ray executor's
micro-batching and the backends' adapter cache gain, each figure beside a baseline run in the same process.

- Ray overhead: one unipgen job through `RayExecutor` (submit → claim → prepare the context →
  model actor → store the artifact → job record read back) vs a raw Ray call: a plain actor
  holding the same backend, `generate([request], fetch)` on the same prepared request. Tiny SD
  image (a few diffusion steps: a call of a few hundred ms) and the tiny text model (a call of
  tens of ms, where per-call overhead is most of it);
- batching: 32 text jobs of 8 users, each user with their own LoRA adapter stored as an
  artifact (the router picks `lora`), run through `RayExecutor` with 32 in flight (the model
  actor micro-batches them: mixed adapters in one batch) vs the same jobs one at a time;
  outputs compared byte for byte, the actor's batch sizes reported;
- adapter cache: a Zipf(s=1.1) mix of requests over 40 users' adapters (seeded) through the
  text backend with its default LRU size, hit rate from its `adapter_cache_stats` counters; a uniform
  mix over the same adapters as the baseline;
- inline executor: small text jobs through `InlineExecutor` (queue included), jobs/s, and the
  per-job time vs calling the same backend directly on the same prepared request.

Everything runs on the tiny profile (tiny random Llama, tiny random Stable Diffusion) on a local
loopback Ray cluster this run starts (and stops). Times are medians of alternating runs after warm-up.
"""

from __future__ import annotations

import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unipgen.bench.generation import LIBRARIES, make_text_adapter, ms, paired_medians, timed
from unipgen.bench.stages import Stage, run_stages
from unipgen.eval.environment import machine
from unipgen.schema.context import AdapterRef, Conditioning, PersonalizationPlan, UserContext
from unipgen.schema.generation import GenerationOptions, GenerationRequest
from unipgen.schema.jobs import GenerateSpec

THREADS = 1  # torch threads in this process; the model actors use 1 too (ModelWorker's default)
TENANT = "ml"
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "movielens-sample"
IMAGE_STEPS = 4  # tiny SD at 64x64 with guidance: a call of about 100-300 ms on one core
TEXT_TOKENS = 32
INSTRUCTIONS = ["write me a postcard about my trip", "a poem about the sea", "a short story about the mountains",
                "a note to a dear friend"]


def run(quick: bool = False) -> dict[str, Any]:
    """All figures; `quick` uses fewer repeats and requests (about a minute)."""
    torch.set_num_threads(THREADS)
    results: dict[str, Any] = {"machine": machine(*LIBRARIES), "quick": quick}
    home = Path(tempfile.mkdtemp(prefix="unipgen-orch-bench-"))
    print("[0] set-up: store, Ray cluster, model actors...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    bench = _Setup(home)
    results["setup_s"] = round(time.perf_counter() - started, 1)
    print(f"      {results['setup_s']} s", file=sys.stderr, flush=True)
    try:
        stages: list[Stage] = [
            ("ray overhead (image)", lambda: bench.ray_overhead("image", runs=3 if quick else 15)),
            ("ray overhead (text)", lambda: bench.ray_overhead("text", runs=3 if quick else 15)),
            ("ray overhead (image, 8 and 16 steps)", lambda: bench.ray_overhead_sweep(runs=3 if quick else 9)),
            ("batching", lambda: bench.batching(repeats=1 if quick else 5, actor_repeats=1 if quick else 7)),
            ("batching (64 tokens)", lambda: bench.batching(repeats=1 if quick else 3, actor_repeats=1 if quick else 3,
                                                            tokens=64, suffix="_64_tokens")),
            ("inline executor", lambda: bench.inline(jobs=8 if quick else 40, runs=3 if quick else 15)),
            ("adapter cache", lambda: bench_adapter_cache(users=40, requests=80 if quick else 600)),
        ]
        results |= run_stages(stages, show_seconds=True)
    finally:
        bench.close()
        shutil.rmtree(home, ignore_errors=True)
    return results


# -- shared set-up: store, model, cluster, executors ---------------------------------------------


def _stopwatch() -> Callable[[str], None]:
    """Prints the seconds since the last call (set-up progress on stderr)."""
    last = [time.perf_counter()]

    def log(what: str) -> None:
        now = time.perf_counter()
        print(f"      {what}: {now - last[0]:.1f} s", file=sys.stderr, flush=True)
        last[0] = now

    return log


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _raw_actor_class() -> type:
    """The baseline: a plain actor holding the backends (a local class: Ray pickles it by value)."""

    class RawBackends:
        def __init__(self, specs: dict[str, dict[str, Any]], blob_url: str) -> None:
            import torch

            from unipgen.memory.blobs import BlobStore
            from unipgen.modalities import load_backend
            from unipgen.schema.profiles import ComponentSpec

            torch.set_num_threads(1)
            self.backends = {modality: load_backend(ComponentSpec(**spec)) for modality, spec in specs.items()}
            for backend in self.backends.values():
                backend.setup()
            self.blobs = BlobStore(blob_url)

        def generate(self, modality: str, request: Any) -> list[Any]:
            return self.backends[modality].generate([request], self.blobs.get)[0]

    return RawBackends


class _Setup:
    """A store with the MovieLens sample (8 users, each with a text LoRA artifact), the tiny
    profile's model, a local Ray cluster, a `RayExecutor` and an `InlineExecutor`."""

    def __init__(self, home: Path) -> None:
        import ray

        from unipgen.core.usermodel import UserModel
        from unipgen.memory import MemoryStore
        from unipgen.memory.loaders import load_movielens
        from unipgen.orchestrator import InlineExecutor
        from unipgen.orchestrator.ray_cluster import connect
        from unipgen.orchestrator.ray_executor import RayExecutor
        from unipgen.schema.profiles import load_profile
        from unipgen.settings import Settings

        _log = _stopwatch()
        self.store = MemoryStore.open(Settings(home=home / "store"))
        self.profile = load_profile("tiny")
        self.model = UserModel(self.store, self.profile, cache_dir=home / "cache")
        self.cluster = connect(home, num_cpus=2, num_gpus=0)
        _log("cluster")
        self.executor = RayExecutor(self.model, cluster=self.cluster, lease_s=120, backoff_s=0.0, poll_s=0.5)
        self.inline_executor = InlineExecutor(self.model, lease_s=120, backoff_s=0.0)
        self.raw: Any = None
        self._ray = ray
        self._jobs = 0
        for modality in ("image", "text"):  # the actors load their models while this process loads the data
            self.executor.actor(modality)
        self.raw_actor()
        _log("actors created")
        load_movielens(self.store, TENANT, SAMPLE, users=8)
        self.users = sorted(self.store.users.list_users(TENANT), key=int)[:8]
        self.model.embed_missing(TENANT)
        _log("data")
        for number, user in enumerate(self.users):  # each user's own text LoRA: the router picks `lora`
            self.store.artifacts.add_artifact(TENANT, f"text-lora-{user}", kind="adapter", media_type="application/zip",
                                    data=make_text_adapter(100 + number), user=user,
                                    meta={"modality": "text", "method": "lora"})
        _log("adapters")
        ray.get([self.executor.actor("image").info.remote(), self.executor.actor("text").info.remote(),
                 self.raw_actor().__ray_ready__.remote()])
        _log("actors ready")

    def close(self) -> None:
        if self.raw is not None:
            self._ray.kill(self.raw)
        self.executor.shutdown()  # its actors, and the cluster: started here
        if self.cluster.started_here and self._ray.is_initialized():
            self.cluster.shutdown()
        self.store.close()

    # -- helpers ---------------------------------------------------------------------------------

    def key(self, label: str) -> str:
        self._jobs += 1
        return f"bench-{label}-{self._jobs}"

    def blob(self, job: Any) -> str | None:
        [key] = job.result["artifacts"]
        return self.store.artifacts.artifact(TENANT, key).blob_sha

    def run_job(self, executor: Any, user: str, spec: GenerateSpec) -> str | None:
        """One job start to end: submit, wait (claim, prepare, work, store), stored artifact's sha."""
        job = executor.wait(TENANT, executor.submit(TENANT, user, spec, key=self.key(executor.name)).key)
        if job.status != "succeeded":
            raise RuntimeError(f"job {job.key} {job.status}: {job.error}")
        return self.blob(job)

    def raw_actor(self) -> Any:
        """One plain actor holding the image and text backends, built as the profile says."""
        if self.raw is None:
            from unipgen.modalities import PLACEMENT_KEYS

            specs = {modality: {"type": spec.type, "ref": spec.ref,
                                "options": {k: v for k, v in spec.options.items() if k not in PLACEMENT_KEYS}}
                     for modality, spec in self.profile.backends.items() if modality in ("image", "text")}
            remote: Any = self._ray.remote(_raw_actor_class()).options(num_cpus=0, max_concurrency=1)  # Ray's class
            self.raw = remote.remote(specs, self.store.blobs.url)
        return self.raw

    def actor_info(self, modality: str) -> dict[str, Any]:
        return self._ray.get(self.executor.actor(modality).info.remote())

    # -- figure 1: Ray overhead --------------------------------------------------------------------

    def ray_overhead(self, modality: str, runs: int, steps: int = IMAGE_STEPS, suffix: str | None = None) -> dict[str, Any]:
        """One job through RayExecutor vs the same backend call on a raw actor, same request."""
        from unipgen.orchestrator import prepare_generation

        user = self.users[0]
        if modality == "image":
            spec = GenerateSpec(modality="image", instruction="a poster of a desert road",
                                options=GenerationOptions(seed=3, steps=steps))
        else:
            spec = GenerateSpec(modality="text", instruction=INSTRUCTIONS[0],
                                options=GenerationOptions(seed=3, max_new_tokens=TEXT_TOKENS))
        request = prepare_generation(self.model, TENANT, user, spec.modalities[0], spec.instruction, spec.options).request
        raw = self.raw_actor()

        def ours() -> str | None:
            return self.run_job(self.executor, user, spec)

        def base() -> str:
            return _sha(self._ray.get(raw.generate.remote(modality, request))[0].data)

        ours_s, base_s, ratio, pairs = paired_medians(ours, base, runs, warmup=2)
        if suffix is None:
            suffix = "" if modality == "image" else "_text"
        return {f"ray_overhead_ratio{suffix}": round(ratio, 3), f"ray_job_ms{suffix}": ms(ours_s),
                f"ray_raw_call_ms{suffix}": ms(base_s), f"ray_overhead_ms{suffix}": ms(ours_s - base_s),
                f"ray_identical_output{suffix}": all(a == b for a, b in pairs),
                f"ray_overhead_settings{suffix}": {
                    "modality": modality, "method": request.plan.method, "runs": runs,
                    **({"steps": steps, "seed": 3} if modality == "image"
                       else {"max_new_tokens": TEXT_TOKENS, "seed": 3}),
                    "max_wait_ms": self.profile.backends[modality].options.get("max_wait_ms", 10.0)}}

    def ray_overhead_sweep(self, runs: int) -> dict[str, Any]:
        """The image figure at more diffusion steps: the job's cost beside the raw call is about
        fixed, so the ratio falls as the call grows."""
        sweep = {}
        for steps in (8, 16):
            found = self.ray_overhead("image", runs, steps=steps, suffix="_sweep")
            sweep[str(steps)] = {"ratio": found["ray_overhead_ratio_sweep"], "job_ms": found["ray_job_ms_sweep"],
                                 "raw_call_ms": found["ray_raw_call_ms_sweep"],
                                 "overhead_ms": found["ray_overhead_ms_sweep"],
                                 "identical_output": found["ray_identical_output_sweep"]}
        return {"ray_overhead_by_steps": sweep}

    # -- figure 2: batching --------------------------------------------------------------------------

    def batching(self, repeats: int, actor_repeats: int, jobs_per_user: int = 4, tokens: int = TEXT_TOKENS,
                 suffix: str = "") -> dict[str, Any]:
        """32 LoRA text jobs of 8 users with 32 in flight vs one at a time, alternating; and the
        model actor alone: the same 32 prepared requests sent all at once vs one after another."""
        from unipgen.orchestrator import prepare_generation

        plan: list[tuple[str, GenerateSpec]] = []
        for number in range(jobs_per_user):
            for user in self.users:
                plan.append((user, GenerateSpec(modality="text", instruction=INSTRUCTIONS[number % len(INSTRUCTIONS)],
                                                options=GenerationOptions(seed=number, max_new_tokens=tokens))))
        executor = self.executor
        actor = executor.actor("text")

        def jobs_round(concurrency: int) -> tuple[float, list[str | None], list[int]]:
            before = len(self.actor_info("text")["batches"])
            keys = [executor.submit(TENANT, user, spec, key=self.key(f"batch{concurrency}")).key for user, spec in plan]
            executor.concurrency = concurrency
            start = time.perf_counter()
            done = {job.key: job for job in executor.run_pending()}
            elapsed = time.perf_counter() - start
            failed = [job for job in done.values() if job.status != "succeeded"]
            if failed or set(done) != set(keys):
                raise RuntimeError(f"batching round: {len(failed)} failed, e.g. {failed[:1]}")
            batches = self.actor_info("text")["batches"][before:]
            return elapsed, [self.blob(done[key]) for key in keys], batches

        requests = [prepare_generation(self.model, TENANT, user, spec.modalities[0], spec.instruction, spec.options).request
                    for user, spec in plan]
        assert {r.plan.method for r in requests} == {"lora"}, "the router should pick each user's adapter"

        seen: list[list[int]] = []  # the actor's batches during each all-at-once call

        def actor_all_at_once() -> list[str]:
            before = len(self.actor_info("text")["batches"])
            outputs = self._ray.get([actor.generate.remote(r) for r in requests])
            seen.append(self.actor_info("text")["batches"][before:])
            return [_sha(out[0].data) for out in outputs]

        def actor_one_by_one() -> list[str]:
            return [_sha(self._ray.get(actor.generate.remote(r))[0].data) for r in requests]

        # warm-up inside: every user's adapter loaded in the actor, code paths warm
        a_s, a_single_s, a_ratio, a_pairs = paired_medians(actor_all_at_once, actor_one_by_one, actor_repeats)
        actor_batches = Counter(size for sizes in seen[1:] for size in sizes)  # warm-up call excluded
        parallel_s, serial_s, ratios, identical = [], [], [], []
        batch_sizes: Counter[int] = Counter()
        serial_batches: Counter = Counter()
        for _ in range(repeats):
            p_s, p_out, p_batches = jobs_round(len(plan))
            s_s, s_out, s_batches = jobs_round(1)
            parallel_s.append(p_s)
            serial_s.append(s_s)
            ratios.append(s_s / p_s)
            identical.append(p_out == s_out == a_pairs[0][0])
            batch_sizes.update(p_batches)
            serial_batches.update(s_batches)
        executor.concurrency = 8
        info = self.actor_info("text")
        med = statistics.median
        worker = self.profile.backends["text"].options
        figures = {"batching_speedup": round(med(ratios), 2),
                "batching_jobs_per_s": round(len(plan) / med(parallel_s), 1),
                "sequential_jobs_per_s": round(len(plan) / med(serial_s), 1),
                "batching_ms": ms(med(parallel_s)), "sequential_ms": ms(med(serial_s)),
                "batching_identical_outputs": all(identical) and all(a == b for a, b in a_pairs),
                "batching_batch_sizes": _sizes(batch_sizes),
                "batching_mean_batch": round(sum(s * c for s, c in batch_sizes.items()) / sum(batch_sizes.values()), 1),
                "sequential_batch_sizes": _sizes(serial_batches),
                "actor_batching_speedup": round(1 / a_ratio, 2), "actor_batched_ms": ms(a_s),
                "actor_one_by_one_ms": ms(a_single_s), "actor_batch_sizes": _sizes(actor_batches),
                "batching_actor_adapter_cache": info["adapter_cache"],
                "batching_settings": {"jobs": len(plan), "users": len(self.users), "method": "lora (one adapter per user)",
                                      "concurrency": [len(plan), 1], "max_new_tokens": tokens,
                                      "repeats": repeats, "actor_repeats": actor_repeats,
                                      "max_batch_requests": worker.get("max_batch_requests", 16),
                                      "max_wait_ms": worker.get("max_wait_ms", 10.0),
                                      "backend_max_batch": worker.get("max_batch", 16),
                                      "max_adapters": worker.get("max_adapters", 8)}}
        return {f"{name}{suffix}": value for name, value in figures.items()}

    # -- figure 4: inline executor ---------------------------------------------------------------------

    def inline(self, jobs: int, runs: int) -> dict[str, Any]:
        """Small text jobs through InlineExecutor: jobs/s, and per job vs the direct backend call."""
        from unipgen.orchestrator import prepare_generation

        executor = self.inline_executor
        user = self.users[0]
        spec = GenerateSpec(modality="text", instruction=INSTRUCTIONS[1],
                            options=GenerationOptions(seed=5, max_new_tokens=8))
        request = prepare_generation(self.model, TENANT, user, spec.modalities[0], spec.instruction, spec.options).request
        backend = executor.backend("text")
        fetch = self.store.blobs.get

        def ours() -> str | None:
            return self.run_job(executor, user, spec)

        def base() -> str:
            return _sha(backend.generate([request], fetch)[0][0].data)

        ours_s, base_s, ratio, pairs = paired_medians(ours, base, runs, warmup=2)
        elapsed, _ = timed(lambda: [self.run_job(executor, user, spec) for _ in range(jobs)])
        prepare_s = statistics.median(
            timed(lambda: prepare_generation(self.model, TENANT, user, spec.modalities[0], spec.instruction,
                                              spec.options))[0] for _ in range(runs))
        return {"inline_jobs_per_s": round(jobs / elapsed, 1), "inline_overhead_ratio": round(ratio, 3),
                "inline_job_ms": ms(ours_s), "inline_direct_call_ms": ms(base_s),
                "inline_identical_output": all(a == b for a, b in pairs),
                "job_prepare_ms": ms(prepare_s),
                "inline_settings": {"jobs": jobs, "runs": runs, "max_new_tokens": 8, "method": request.plan.method,
                                    "store": "SQLite + local blobs"}}


# -- figure 3: adapter cache -------------------------------------------------------------------------


def cache_counts(backend: Any) -> dict[str, int]:
    """A backend's adapter cache hits and misses."""
    return backend.adapter_cache_stats


def _sizes(counts: Counter) -> dict[str, int]:
    return {str(size): count for size, count in sorted(counts.items())}


def _lora_request(prompt: str, ref: AdapterRef, seed: int, max_new_tokens: int) -> GenerationRequest:
    from datetime import UTC, datetime

    context = UserContext(tenant="bench", user="u", modality="text", instruction=prompt, profile={},
                          conditioning=Conditioning(adapters=[ref]), built_at=datetime(2024, 1, 1, tzinfo=UTC))
    plan = PersonalizationPlan(modality="text", method="lora", prompt=prompt, reasons=["bench"], adapters=[ref.key],
                               budget_tokens=256, used_tokens=8)
    return GenerationRequest(context=context, plan=plan,
                             options=GenerationOptions(seed=seed, max_new_tokens=max_new_tokens))


def zipf_weights(n: int, s: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** s
    return weights / weights.sum()


def bench_adapter_cache(users: int, requests: int, s: float = 1.1, seed: int = 0,
                        max_new_tokens: int = 2) -> dict[str, Any]:
    """Zipf vs uniform mixes of one-request calls over `users` adapters; the backend's own counters."""
    from unipgen.modalities.text import TransformersTextBackend

    blobs: dict[str, bytes] = {}
    refs = []
    for user in range(users):
        data = make_text_adapter(1000 + user)
        blobs[_sha(data)] = data
        refs.append(AdapterRef(key=f"user{user}-text", method="lora", blob_sha=_sha(data)))
    rng = np.random.default_rng(seed)
    mixes = {"zipf": rng.choice(users, size=requests, p=zipf_weights(users, s)),
             "uniform": rng.choice(users, size=requests)}
    results: dict[str, Any] = {}
    cache_size = None
    for name, picks in mixes.items():
        with tempfile.TemporaryDirectory() as folder:
            backend = TransformersTextBackend(adapter_cache=folder)  # the default LRU size
            backend.setup()
            cache_size = backend.max_adapters
            hit_s: list[float] = []
            miss_s: list[float] = []
            for number, pick in enumerate(picks):
                req = _lora_request(INSTRUCTIONS[number % len(INSTRUCTIONS)], refs[int(pick)], number, max_new_tokens)
                misses = cache_counts(backend)["misses"]
                elapsed, _ = timed(partial(backend.generate, [req], blobs.__getitem__))
                (miss_s if cache_counts(backend)["misses"] > misses else hit_s).append(elapsed)
            counts = dict(cache_counts(backend))
        total = counts["hits"] + counts["misses"]
        results[name] = {"hit_rate": round(counts["hits"] / total, 3), "hits": counts["hits"],
                         "misses": counts["misses"], "distinct_adapters": len(set(picks.tolist())),
                         "hit_call_ms": ms(statistics.median(hit_s)) if hit_s else None,
                         "miss_call_ms": ms(statistics.median(miss_s)) if miss_s else None}
    assert cache_size is not None  # set by the first mix
    top = np.sort(zipf_weights(users, s))[::-1][:cache_size].sum()
    return {"adapter_cache_hit_rate": results["zipf"]["hit_rate"],
            "adapter_cache_hit_rate_uniform": results["uniform"]["hit_rate"],
            "adapter_cache_size": cache_size, "adapter_cache_detail": results,
            "adapter_cache_settings": {"users": users, "requests": requests, "zipf_s": s, "seed": seed,
                                       "max_new_tokens": max_new_tokens, "batch": 1,
                                       "zipf_mass_of_top_cache_size": round(float(top), 3),
                                       "uniform_expected": round(cache_size / users, 3)}}

