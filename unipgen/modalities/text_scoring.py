"""Answers that are labels: the log-likelihood of each allowed answer after a prompt, by a causal LM.

A classification or rating request (`GenerationOptions.labels` / `scale`) is not sampled and
parsed: every allowed answer is scored as the model's log-probability of writing exactly it,
its tokens and then the end of the turn, after the served prompt (chat template included). The
prompt runs once; its key/value cache is repeated for every answer, whose tokens run in one
batch. That is the same sum as one forward pass over prompt + answer per answer (tested), for
a fraction of the work: the prompt is long, the answers are a few tokens.

Rows may use different LoRA adapters (PEFT's ``adapter_names``), as in generation: the
likelihoods are those of the model the user's requests are served with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unipgen.errors import InvalidInputError

#: At most this many (prompt, answer) rows run in one batch of the answer pass.
ANSWER_ROWS = 64


@dataclass(frozen=True)
class Tokenized:
    """One prompt's ids and, for each answer, the ids that follow it (the end of the turn included)."""

    prompt: list[int]
    answers: list[list[int]]


def tokenize(tokenizer: Any, text: str, templated: bool, answers: Sequence[str], end_ids: Sequence[int],
             budget: int) -> Tokenized:
    """The prompt's ids (its last `budget` tokens) and each answer's continuation ids.

    An answer is tokenized after the prompt, as the model would read it written there; where
    that changes the prompt's own last tokens (a merge across the boundary), alone instead.
    """
    prompt = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    continued = []
    for answer in answers:
        joined = tokenizer(text + answer, add_special_tokens=not templated)["input_ids"]
        ids = joined[len(prompt):] if joined[: len(prompt)] == prompt else \
            tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not ids:
            raise InvalidInputError(f"answer {answer!r} has no tokens")
        continued.append(list(ids) + list(end_ids))
    if budget < 1:
        raise InvalidInputError("the longest answer leaves no room for the prompt in the model's context")
    return Tokenized(prompt=list(prompt)[-budget:], answers=continued)


def answer_logprobs(model: Any, rows: Sequence[Tokenized], adapters: Sequence[str] | None, pad_id: int,
                    device: str = "cpu") -> list[list[float]]:
    """Per row, the summed log-probability of each of its answers' ids after its prompt.

    `adapters`: each row's PEFT adapter name (None: the model has no adapters). Rows are run in
    groups whose answers fit `ANSWER_ROWS` rows of the answer pass.
    """
    out: list[list[float]] = []
    start = 0
    while start < len(rows):
        group = max(1, ANSWER_ROWS // max(len(rows[start].answers), 1))
        chunk = rows[start: start + group]
        names = list(adapters[start: start + group]) if adapters is not None else None
        out += _chunk_logprobs(model, chunk, names, pad_id, device)
        start += len(chunk)
    return out


def _chunk_logprobs(model: Any, rows: Sequence[Tokenized], names: list[str] | None, pad_id: int,
                    device: str) -> list[list[float]]:
    """One prompt pass (left-padded) and one answer pass (right-padded) over the repeated cache."""
    import torch

    width = max(len(row.prompt) for row in rows)
    ids = torch.tensor([[pad_id] * (width - len(r.prompt)) + r.prompt for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in rows], device=device)
    extra: dict[str, Any] = {"adapter_names": names} if names is not None else {}
    counts = [len(row.answers) for row in rows]
    repeat = torch.tensor(counts, device=device)
    with torch.inference_mode():
        first = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                      use_cache=True, logits_to_keep=1, **extra)
        cache = first.cache
        _repeat_cache(cache, repeat)
        answers = [answer for row in rows for answer in row.answers]
        span = max(len(a) for a in answers)
        answer_ids = torch.tensor([a + [pad_id] * (span - len(a)) for a in answers], device=device)
        answer_mask = torch.tensor([[1] * len(a) + [0] * (span - len(a)) for a in answers], device=device)
        lengths = mask.sum(-1).repeat_interleave(repeat)
        positions = lengths[:, None] + torch.arange(span, device=device)[None, :]
        full_mask = torch.cat([mask.repeat_interleave(repeat, dim=0), answer_mask], dim=1)
        if names is not None:
            extra = {"adapter_names": [name for name, count in zip(names, counts, strict=True) for _ in range(count)]}
        second = model(input_ids=answer_ids, attention_mask=full_mask, position_ids=positions,
                       cache=cache, use_cache=True, **extra)
        logits = torch.cat([first.logits[:, -1:].repeat_interleave(repeat, dim=0), second.logits[:, :-1]], dim=1)
        taken = torch.log_softmax(logits.float(), dim=-1).gather(-1, answer_ids[..., None])[..., 0]
        totals = (taken * answer_mask).sum(-1).tolist()
    out, at = [], 0
    for count in counts:
        out.append([float(v) for v in totals[at: at + count]])
        at += count
    return out


def _repeat_cache(cache: Any, repeat: Any) -> None:
    """Repeat row i of a key/value cache `repeat[i]` times, in place (rows may have unequal counts)."""
    import torch

    cache.batch_select_indices(torch.repeat_interleave(torch.arange(len(repeat), device=repeat.device), repeat))


def best(logprobs: Sequence[float]) -> int:
    """The index of the likeliest answer (the first of a tie)."""
    return max(range(len(logprobs)), key=lambda i: (logprobs[i], -i))


__all__ = ["ANSWER_ROWS", "Tokenized", "answer_logprobs", "best", "tokenize"]
