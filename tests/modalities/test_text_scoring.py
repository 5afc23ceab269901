"""Labels and ratings scored by the text backend on the tiny random Llama: every allowed answer's
log-likelihood after the prompt, computed once for the prompt and in one batch for the answers,
equals the sum a plain forward pass over prompt + answer gives (with and without per-user LoRA
adapters, prompts of different lengths in one batch); a labels request mixed with sampled ones."""

from __future__ import annotations

import pytest
import torch

from tests.modalities.test_text import PROMPTS, make_adapter, request, sha
from unipgen.modalities import text_scoring
from unipgen.modalities.text import TransformersTextBackend, prompt_text
from unipgen.schema.context import AdapterRef
from unipgen.schema.generation import GenerationOptions, GenerationRequest

torch.set_num_threads(1)
LABELS = ("sea", "city", "mountains", "quiet evenings", "coffee and books")


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> TransformersTextBackend:
    text = TransformersTextBackend(adapter_cache=str(tmp_path_factory.mktemp("adapters")), max_batch=4)
    text.setup()
    return text


@pytest.fixture(scope="module")
def adapter() -> tuple[AdapterRef, dict[str, bytes]]:
    data = make_adapter(3)
    return AdapterRef(key="u-text", method="lora", blob_sha=sha(data), meta={"modality": "text"}), {sha(data): data}


def scored(prompt: str, adapter: AdapterRef | None = None, **options: object) -> GenerationRequest:
    plain = request(prompt, adapter=adapter)
    return plain.model_copy(update={"options": GenerationOptions(**options)})


def full_pass(backend: TransformersTextBackend, prompt: str, answers: tuple[str, ...],
              adapter: str | None = None) -> list[float]:
    """Each answer's log-probability by one forward pass over prompt + answer + end of turn, alone."""
    tokenizer, model = backend.tokenizer, backend.model
    text, templated = prompt_text(tokenizer, prompt)
    prompt_ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    totals = []
    for answer in answers:
        joined = tokenizer(text + answer, add_special_tokens=not templated)["input_ids"]
        ids = joined[len(prompt_ids):] + [tokenizer.eos_token_id]
        extra = {"adapter_names": [adapter]} if adapter else {}
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([prompt_ids + ids]), **extra).logits[0].log_softmax(-1)
        totals.append(sum(float(logits[len(prompt_ids) - 1 + i, token]) for i, token in enumerate(ids)))
    return totals


def test_scores_equal_a_full_pass_per_answer(backend: TransformersTextBackend) -> None:
    outputs = backend.generate([scored(PROMPTS[0], labels=LABELS), scored(PROMPTS[1], labels=LABELS)],
                               lambda sha256: b"")
    for prompt, [output] in zip(PROMPTS, outputs, strict=False):  # prompts of different lengths: left padding
        expected = full_pass(backend, prompt, LABELS)
        assert output.meta["answer_logprobs"] == pytest.approx(expected, abs=2e-3)
        assert output.data.decode() == LABELS[max(range(len(LABELS)), key=expected.__getitem__)]
        assert output.meta["scored"] is True and output.meta["answers"] == list(LABELS)


def test_scores_through_each_rows_adapter(backend: TransformersTextBackend,
                                          adapter: tuple[AdapterRef, dict[str, bytes]]) -> None:
    ref, blobs = adapter
    rows = [scored(PROMPTS[2], ref, labels=LABELS), scored(PROMPTS[2], labels=LABELS)]
    tuned, base = backend.generate(rows, blobs.__getitem__)
    assert tuned[0].meta["adapters"] == ["u-text"] and base[0].meta["adapters"] == []
    assert tuned[0].meta["answer_logprobs"] != base[0].meta["answer_logprobs"]  # the adapter acts
    assert tuned[0].meta["answer_logprobs"] == pytest.approx(full_pass(backend, PROMPTS[2], LABELS, ref.blob_sha),
                                                             abs=2e-3)
    assert base[0].meta["answer_logprobs"] == pytest.approx(full_pass(backend, PROMPTS[2], LABELS, "__base__"),
                                                            abs=2e-3)


def test_a_scale_is_scored_and_sampled_requests_keep_their_place(backend: TransformersTextBackend) -> None:
    rows = [request(PROMPTS[0], seed=3), scored(PROMPTS[1], scale=(1, 5)), request(PROMPTS[2], seed=3)]
    sampled, rating, last = backend.generate(rows, lambda sha256: b"")
    assert rating[0].meta["answers"] == ["1", "2", "3", "4", "5"] and rating[0].data.decode() in "12345"
    alone = backend.generate([rows[0], rows[2]], lambda sha256: b"")
    assert [sampled[0].data, last[0].data] == [alone[0][0].data, alone[1][0].data]
    assert "answer_logprobs" not in sampled[0].meta


def test_answers_of_unequal_count_share_one_batch(backend: TransformersTextBackend) -> None:
    """Rows with 2 and 5 answers: the cache rows repeat unequally, and each gets its own sums."""
    rows = [scored(PROMPTS[0], labels=LABELS[:2]), scored(PROMPTS[1], labels=LABELS)]
    together = backend.generate(rows, lambda sha256: b"")
    alone = [backend.generate([row], lambda sha256: b"")[0] for row in rows]
    for joint, single in zip(together, alone, strict=True):
        assert joint[0].meta["answer_logprobs"] == pytest.approx(single[0].meta["answer_logprobs"], abs=2e-3)


def test_prompts_are_grouped_to_bound_the_answer_batch(backend: TransformersTextBackend,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [scored(p, labels=LABELS) for p in PROMPTS]
    monkeypatch.setattr(text_scoring, "ANSWER_ROWS", 5)  # one prompt of 5 answers per group
    grouped = [v for o in backend.generate(rows, lambda sha256: b"") for v in o[0].meta["answer_logprobs"]]
    monkeypatch.undo()
    together = [v for o in backend.generate(rows, lambda sha256: b"") for v in o[0].meta["answer_logprobs"]]
    assert grouped == pytest.approx(together, abs=2e-3)


def test_best_takes_the_first_of_a_tie() -> None:
    assert text_scoring.best([-2.0, -1.0, -1.0]) == 1
