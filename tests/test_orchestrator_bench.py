"""The orchestrator benchmark at quick size (a local Ray cluster, tiny models), and the text
backend's adapter cache counters it reports."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest


def _bench_module():  # type: ignore[no-untyped-def]
    """unipgen.bench.orchestrator, imported when a test needs it (it imports torch)."""
    from unipgen.bench import orchestrator

    return orchestrator


def test_text_backend_counts_a_miss_then_a_hit_for_the_same_adapter(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    _miss_then_hit(tmp_path)


def _miss_then_hit(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from unipgen.modalities.text import TransformersTextBackend, tiny_lm_dir
    from unipgen.modalities.text_training import save_text_adapter
    from unipgen.schema.context import AdapterRef, Conditioning, PersonalizationPlan, UserContext
    from unipgen.schema.generation import GenerationOptions, GenerationRequest

    torch.set_num_threads(1)
    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_lm_dir()),
                                LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    data = save_text_adapter(peft_model, "default")
    sha = hashlib.sha256(data).hexdigest()
    ref = AdapterRef(key="user-lora", method="lora", blob_sha=sha)

    def request(seed: int) -> GenerationRequest:
        context = UserContext(tenant="t", user="u", modality="text", instruction="a poem", profile={},
                              conditioning=Conditioning(adapters=[ref]), built_at=datetime(2024, 1, 1, tzinfo=UTC))
        plan = PersonalizationPlan(modality="text", method="lora", prompt="a poem about the sea", reasons=["test"],
                                   adapters=[ref.key], budget_tokens=64, used_tokens=4)
        return GenerationRequest(context=context, plan=plan, options=GenerationOptions(seed=seed, max_new_tokens=3))

    counts = _bench_module().cache_counts
    backend = TransformersTextBackend(adapter_cache=str(tmp_path / "adapters"))
    assert counts(backend) == {"hits": 0, "misses": 0}
    backend.generate([request(0)], {sha: data}.__getitem__)
    assert counts(backend) == {"hits": 0, "misses": 1}
    backend.generate([request(1)], {sha: data}.__getitem__)
    assert counts(backend) == {"hits": 1, "misses": 1}


def test_zipf_weights_favour_the_first_ranks() -> None:
    weights = _bench_module().zipf_weights(40, 1.1)
    assert weights.sum() == pytest.approx(1.0) and all(weights[:-1] > weights[1:])


@pytest.mark.slow
def test_orchestrator_bench_quick_reports_every_figure() -> None:
    pytest.importorskip("ray")
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    result = _bench_module().run(quick=True)
    assert result["quick"] is True and result["machine"]["cores"] >= 1
    # Ray overhead, image and text: one job vs the raw actor call, same request, same bytes
    for suffix in ("", "_text"):
        assert result[f"ray_overhead_ratio{suffix}"] > 0
        assert result[f"ray_job_ms{suffix}"] > 0 and result[f"ray_raw_call_ms{suffix}"] > 0
        assert result[f"ray_identical_output{suffix}"] is True
    assert result["ray_overhead_settings_text"]["method"] == "lora"
    # batching: 32 LoRA jobs of 8 users, 32 in flight vs one at a time, same bytes both ways
    assert result["batching_speedup"] > 0 and result["actor_batching_speedup"] > 0
    assert result["batching_jobs_per_s"] > 0 and result["sequential_jobs_per_s"] > 0
    assert result["batching_identical_outputs"] is True
    assert set(result["sequential_batch_sizes"]) == {"1"}
    assert max(int(size) for size in result["batching_batch_sizes"]) > 1  # the actor did batch
    assert max(int(size) for size in result["actor_batch_sizes"]) > 1
    assert result["batching_actor_adapter_cache"]["misses"] >= 1
    assert result["batching_identical_outputs_64_tokens"] is True
    assert result["batching_settings_64_tokens"]["max_new_tokens"] == 64
    # the image figure at 8 and 16 steps: same bytes, and a longer call than at 4 steps
    sweep = result["ray_overhead_by_steps"]
    assert set(sweep) == {"8", "16"} and all(s["identical_output"] for s in sweep.values())
    assert sweep["16"]["raw_call_ms"] > result["ray_raw_call_ms"]
    # adapter cache: Zipf vs uniform over 40 adapters, the default LRU size
    zipf, uniform = result["adapter_cache_hit_rate"], result["adapter_cache_hit_rate_uniform"]
    assert 0.0 <= uniform <= zipf <= 1.0
    assert result["adapter_cache_size"] == 8 and result["adapter_cache_settings"]["users"] == 40
    detail = result["adapter_cache_detail"]["zipf"]
    assert detail["hits"] + detail["misses"] == result["adapter_cache_settings"]["requests"]
    # inline executor
    assert result["inline_jobs_per_s"] > 0 and result["inline_overhead_ratio"] > 0
    assert result["inline_identical_output"] is True and result["job_prepare_ms"] > 0
