"""The benchmark harness runs and reports every key docs/benchmarks.md quotes (at toy sizes:
speed itself is measured by `unipgen bench memory`, never asserted in tests)."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from unipgen.bench import memory as memory_bench
from unipgen.bench import vectors


def test_ingest_and_forget_stages() -> None:
    ingest = memory_bench.bench_ingest(None, 300, 30)
    assert ingest["ingest_events"] == 300 and ingest["ingest_events_per_s"] > 0
    assert ingest["ingest_speedup_vs_naive"] == pytest.approx(
        ingest["ingest_events_per_s"] / ingest["naive_events_per_s"], rel=0.05)
    forget = memory_bench.bench_forget(events=100, blobs=5)
    assert forget["forget_deleted"]["blobs"] == 5 and forget["forget_deleted"]["events"] == 100


def test_vector_writes_stage() -> None:
    writes = memory_bench.bench_vector_writes(None, 50, dim=8)
    assert writes["vector_writes_n"] == 50  # seconds round to 0.001: at this size only their presence is checked
    assert writes["vector_writes_speedup"] > 0 and writes["vector_writes_per_vector_s"] >= 0


def test_search_stages() -> None:
    store = memory_bench.bench_store_search(n_users=2, per_user=50, dim=16, queries=50)
    assert store["store_user_search_p99_ms"] >= store["store_user_search_p50_ms"] > 0
    user = vectors.bench_user_search(n_users=5, per_user=50, dim=16, queries=50)
    assert {"user_search_p99_ms", "baseline_user_search_p99_ms"} <= user.keys()
    ann = vectors.bench_ann(n=3000, dim=16, queries=20)
    assert ann["ann_recall_at_10"] == pytest.approx(1.0)  # below the IVF threshold search is exact


def test_usermodel_ranking_harness_on_the_sample() -> None:
    """The leave-last-out harness end to end on the shipped 8-user sample. Item texts are
    embedded by a cheap deterministic stand-in: the harness, not the encoder, is under test."""
    import hashlib

    import numpy as np

    from tests.conftest import SAMPLE
    from unipgen.eval.movielens import bench_ranking

    def hashed(texts: list[str]) -> np.ndarray:
        rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8)[:16] for t in texts]
        matrix = np.stack(rows).astype(np.float32) - 127.5
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    result = bench_ranking(SAMPLE, quick=True, text_encoder=hashed)
    assert result["users_evaluated"] >= 1
    for key in ("ndcg_at_10", "hr_at_10", "popularity_ndcg_at_10", "no_decay_ndcg_at_10", "update_events_per_s"):
        assert key in result
    assert 0.0 <= result["ndcg_at_10"] <= result["hr_at_10"] <= 1.0


# ---------------------------------------------------------------- generation (toy sizes)
# The stages of `unipgen bench generation` on the tiny models with one timed run each: every key
# the Generation section of docs/benchmarks.md quotes is there, ratios are positive and the
# identical-output checks hold.


@pytest.fixture(scope="module")
def generation_bench() -> Iterator[ModuleType]:
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from unipgen.bench import generation

    yield generation


def _positive(result: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert result[key] > 0, (key, result[key])


def test_generation_text_overhead_stage(generation_bench: ModuleType) -> None:
    from unipgen.modalities.text import TINY_LM

    result = generation_bench.bench_text_overhead(TINY_LM, runs=1, max_new_tokens=4)
    for label in ("", "_greedy"):
        _positive(result, f"overhead_ratio_text{label}", f"text_unipgen_ms{label}", f"text_direct_ms{label}")
        assert result[f"identical_output_text{label}"] is True
    assert result["text_settings"]["model"] == TINY_LM


def test_generation_image_overhead_stage(generation_bench: ModuleType) -> None:
    result = generation_bench.bench_image_overhead(runs=1, steps=2)
    _positive(result, "overhead_ratio_image", "image_unipgen_ms", "image_direct_ms")
    assert result["identical_output_image"] is True
    assert result["image_settings"]["steps"] == 2


def test_generation_adapter_switch_stage(generation_bench: ModuleType) -> None:
    result = generation_bench.bench_adapter_switch(runs=1, steps=2)
    _positive(result, "adapter_switch_speedup", "adapter_switch_ms", "adapter_naive_reload_ms",
              "adapter_serve_speedup", "adapter_serve_ms", "adapter_naive_serve_ms", "adapter_cold_load_ms",
              "adapter_warm_load_ms", "adapter_cold_vs_warm")


def test_generation_mixed_batch_stage(generation_bench: ModuleType) -> None:
    result = generation_bench.bench_mixed_batch(runs=1, users=2, per_user=2, max_new_tokens=4)
    _positive(result, "mixed_batch_speedup", "mixed_batch_ms", "one_by_one_ms")
    assert result["mixed_batch_identical"] is True
    assert result["mixed_batch_settings"]["requests"] == 4


def test_generation_training_step_stage(generation_bench: ModuleType) -> None:
    """unipgen's DreamBooth-LoRA and the loop written on diffusers compute the same losses."""
    from unipgen.bench import training

    result = training.bench_training_step(steps=2, rounds=1, warmup=1)
    _positive(result, "train_step_ms_unipgen", "train_step_ms_direct", "train_overhead_ratio")
    assert result["train_losses_identical"] is True and result["train_loss_max_rel_diff"] == 0.0
    assert len(result["train_losses_unipgen"]) == 4  # warm-up + timed + the closing step
    assert result["train_settings"]["prior_preservation"] is True


def test_media_bench_times_video_and_3d_against_their_pipelines() -> None:
    pytest.importorskip("diffusers")
    from unipgen.bench import media

    result = media.run(quick=True)
    _positive(result, "video_s_per_output", "video_direct_s", "video_overhead_ratio", "shape_s_per_output",
              "shape_direct_s", "shape_overhead_ratio", "shape_faces", "shape_preview_bytes")
    assert -1.0 <= result["video_temporal_consistency"] <= 1.0
    assert result["video_temporal_consistency_kind"] == "mechanical check"  # the tiny CLIP measured it


def test_every_bench_command_calls_a_runner_that_takes_its_options() -> None:
    """`unipgen bench`'s table: each runner is a function of a `unipgen.bench` module (read, not
    imported) whose parameters include the command's options."""
    import ast
    import importlib.util
    from pathlib import Path

    from unipgen.cli.bench import BENCHMARKS

    for name, bench in BENCHMARKS.items():
        module, _, function = bench.runner.partition(":")
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, name
        tree = ast.parse(Path(spec.origin).read_text())
        runner = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
        parameters = {a.arg for a in runner.args.args + runner.args.kwonlyargs}
        assert {option.keyword or option.name for option in bench.options} <= parameters, name
