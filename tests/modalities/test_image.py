"""The diffusers image backend on the tiny random pipeline: determinism, batching, and each
personalization (IP-Adapter, LoRA, textual inversion) applied on request and undone after it."""

from __future__ import annotations

import functools
import io
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tests.helpers import BLOBS, fetch, put
from unipgen.bench.generation import make_image_lora as make_lora  # the benchmark's LoRA recipe, one for both
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.modalities.image import LORA_WEIGHT_NAME, DiffusersImageBackend, tiny_sd_dir
from unipgen.modalities.seeding import output_generator
from unipgen.schema.context import (
    AdapterRef,
    Conditioning,
    PersonalizationPlan,
    SubjectAsset,
    UserContext,
)
from unipgen.schema.generation import GenerationOptions, GenerationRequest

NOW = datetime(2024, 1, 1, tzinfo=UTC)
PROMPT = "a photo of a dog in the snow"


def photo(seed: int) -> bytes:
    """A random 40x40 RGB PNG standing in for a subject's reference photo."""
    from PIL import Image

    pixels = torch.randint(0, 256, (40, 40, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def make_embedding(token: str, seed: int) -> bytes:
    """A textual-inversion embedding file ({token: vector}) for the tiny text encoder (width 32)."""
    from safetensors.torch import save

    return save({token: torch.randn(32, generator=torch.Generator().manual_seed(seed))})


@functools.cache
def context() -> UserContext:
    """A user with a subject (two photos, a LoRA), a style LoRA, a learned token and a broken file."""
    rex = SubjectAsset(key="rex", name="Rex", class_noun="dog", image_shas=[put(photo(1)), put(photo(2))],
                       adapters=[AdapterRef(key="rex-lora", method="lora", blob_sha=put(make_lora(1)))])
    style = AdapterRef(key="style-lora", method="lora", blob_sha=put(make_lora(2)), meta={"weight": 0.5})
    token = AdapterRef(key="rex-ti", method="textual_inversion", blob_sha=put(make_embedding("<rex>", 3)),
                       meta={"token": "<rex>"})
    broken = AdapterRef(key="broken-lora", method="lora", blob_sha=put(b"not a safetensors file"))
    return UserContext(tenant="t", user="u", modality="image", instruction=PROMPT, profile={},
                       conditioning=Conditioning(subjects=[rex], adapters=[style, token, broken]), built_at=NOW)


def adapter_sha(key: str) -> str:
    conditioning = context().conditioning
    return next(ref.blob_sha for ref in [*conditioning.adapters, *conditioning.subjects[0].adapters]
                if ref.key == key)


def request(method: str = "prompt_only", prompt: str = PROMPT, negative: str = "", adapters: tuple[str, ...] = (),
            subject: str | None = None, **options: object) -> GenerationRequest:
    plan = PersonalizationPlan(modality="image", method=method, prompt=prompt, negative_prompt=negative,
                               reasons=["test"], subject=subject, adapters=list(adapters), budget_tokens=77,
                               used_tokens=8)
    return GenerationRequest(context=context(), plan=plan, options=GenerationOptions(**options))


@pytest.fixture(scope="module")
def backend() -> DiffusersImageBackend:
    torch.set_num_threads(1)
    return DiffusersImageBackend()


@pytest.fixture(scope="module")
def fresh() -> bytes:
    """The plain image for PROMPT, seed 0, from a pipeline that never saw an adapter."""
    torch.set_num_threads(1)
    return one(DiffusersImageBackend(), request())


def one(backend: DiffusersImageBackend, req: GenerationRequest) -> bytes:
    [[output]] = backend.generate([req], fetch)
    return output.data


def test_registry_builds_the_backend_from_a_profile_entry() -> None:
    from unipgen.modalities import load_backend
    from unipgen.modalities.base import Backend
    from unipgen.schema.profiles import ComponentSpec

    backend = load_backend(ComponentSpec(type="diffusers-sd", options={"steps": 3}))
    assert isinstance(backend, DiffusersImageBackend) and isinstance(backend, Backend)
    assert (backend.ref, backend.steps, backend.modality) == ("tiny-random", 3, "image")
    with pytest.raises(InvalidInputError, match="repo:subfolder:weight_name"):
        DiffusersImageBackend(ip_adapter="h94/IP-Adapter")


def test_same_seed_same_png_and_meta(backend: DiffusersImageBackend, fresh: bytes) -> None:
    [[output]] = backend.generate([request()], fetch)
    assert output.data == fresh and output.data.startswith(b"\x89PNG")
    assert output.media_type == "image/png"
    assert output.meta == {"model": "tiny-random", "method": "prompt_only", "prompt": PROMPT, "negative_prompt": "",
                           "seed": 0, "index": 0, "steps": 2, "guidance_scale": 5.0, "width": 64, "height": 64, "adapters": [],
                           "subject": None}
    assert one(backend, request(seed=1)) != fresh


def test_batch_keeps_order_counts_and_sizes(backend: DiffusersImageBackend) -> None:
    from PIL import Image

    batch = [request(seed=3, num_outputs=2), request(prompt="a red cube", seed=4),
             request(seed=5, width=48, height=32)]
    results = backend.generate(batch, fetch)
    assert [len(outputs) for outputs in results] == [2, 1, 1]
    # Output i of a request seeded s draws from row_seed(s, i): its meta says (s, i).
    assert [(o.meta["seed"], o.meta["index"]) for o in results[0]] == [(3, 0), (3, 1)]
    assert results[0][0].data != results[0][1].data
    assert results[1][0].meta["prompt"] == "a red cube"
    sizes = [Image.open(io.BytesIO(o.data)).size for outputs in results for o in outputs]
    assert sizes == [(64, 64), (64, 64), (64, 64), (48, 32)]


def test_negative_prompt_changes_the_image(backend: DiffusersImageBackend, fresh: bytes) -> None:
    assert one(backend, request(negative="blurry watercolor")) != fresh


def test_ip_adapter_conditions_on_the_subject_and_is_undone(backend: DiffusersImageBackend, fresh: bytes) -> None:
    [[output]] = backend.generate([request("ip_adapter", subject="rex")], fetch)
    assert output.data != fresh
    assert one(backend, request("ip_adapter", subject="rex")) == output.data  # reloads the same way
    assert (output.meta["method"], output.meta["subject"], output.meta["ip_adapter_scale"]) == ("ip_adapter", "rex", 0.6)
    assert one(backend, request("ip_adapter", subject="rex", ip_adapter_scale=0.0)) == fresh  # scale 0: no effect
    assert backend.pipeline.image_encoder is None  # unloaded after use
    assert one(backend, request()) == fresh


def test_ip_adapter_without_reference_images_falls_back(backend: DiffusersImageBackend, fresh: bytes) -> None:
    [[output]] = backend.generate([request("ip_adapter", subject=None)], fetch)
    assert (output.meta["method"], output.meta["requested_method"]) == ("prompt_only", "ip_adapter")
    assert output.data == fresh


def test_lora_changes_the_image_loads_in_plain_diffusers_and_is_undone(
        backend: DiffusersImageBackend, fresh: bytes) -> None:
    from diffusers import StableDiffusionPipeline

    lora = one(backend, request("lora", adapters=("rex-lora",)))
    assert lora != fresh
    assert one(backend, request()) == fresh  # disabled for requests without it
    # Round trip: the blob is a plain diffusers LoRA file, and gives the same image there.
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_dir())
    pipe.set_progress_bar_config(disable=True)
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / LORA_WEIGHT_NAME).write_bytes(BLOBS[adapter_sha("rex-lora")])
        pipe.load_lora_weights(directory, weight_name=LORA_WEIGHT_NAME)
    image = pipe(prompt=[PROMPT], negative_prompt=[""], num_inference_steps=2, guidance_scale=5.0,
                 generator=[output_generator(0, 0)]).images[0]  # as the backend seeds output 0 of seed 0
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert buffer.getvalue() == lora


def test_two_loras_mix_with_their_weights(backend: DiffusersImageBackend, fresh: bytes) -> None:
    single = one(backend, request("lora", adapters=("rex-lora",)))
    both = one(backend, request("lora", adapters=("rex-lora", "style-lora")))
    assert both not in (single, fresh)
    [[output]] = backend.generate([request("lora", adapters=("rex-lora", "style-lora"))], fetch)
    assert output.meta["adapters"] == ["rex-lora", "style-lora"]
    assert backend.pipeline.get_active_adapters() == [adapter_sha("rex-lora")[:16], adapter_sha("style-lora")[:16]]


def test_unknown_and_corrupt_adapters_are_clear_errors(backend: DiffusersImageBackend, fresh: bytes) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        backend.generate([request("lora", adapters=("nope",))], fetch)
    with pytest.raises(InvalidInputError, match="broken-lora"):
        backend.generate([request("lora", adapters=("broken-lora",))], fetch)
    assert one(backend, request()) == fresh  # still serving


def test_textual_inversion_token_is_added_then_removed(backend: DiffusersImageBackend) -> None:
    check_textual_inversion_is_undone(backend, request)


def check_textual_inversion_is_undone(backend: Any, request: Callable[..., GenerationRequest]) -> None:
    """The learned token ``<rex>`` (adapter ``rex-ti``) changes the output only while requested: the
    tokenizer is as it was after (the image and video backends share the pipeline's handling)."""
    prompt = "a photo of <rex> in the snow"
    plain = one(backend, request(prompt=prompt))
    learned = one(backend, request("textual_inversion", prompt=prompt, adapters=("rex-ti",)))
    assert learned != plain
    assert "<rex>" not in backend.pipeline.tokenizer.get_vocab()
    assert one(backend, request(prompt=prompt)) == plain
