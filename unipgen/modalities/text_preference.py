"""A per-user text LoRA fitted to the user's judgements of outputs by DPO.

Direct Preference Optimization (Rafailov et al., 2023) raises the likelihood of the answer a
user chose over the one they rejected, measured against a frozen reference model:

    loss = -log σ(β · [(log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x))])

where log π(y|x) is the summed log-probability of the answer's tokens after the prompt. The
policy is the base LM plus a fresh LoRA, and the reference is the same model with the adapter
disabled, so one copy of the weights serves both; the reference log-probs are computed once.

The loss is a dozen lines here rather than TRL's `DPOTrainer`: TRL brings its own trainer,
dataset and collation stack (and version ranges on transformers) for what is, per user, a few
pairs and a few steps; the function below is checked against hand-computed values in the tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unipgen.errors import InvalidInputError
from unipgen.modalities.checkpoints import TrainingLoop, digests, fingerprint
from unipgen.modalities.text import prompt_text
from unipgen.modalities.text_training import fit_trainable, load_trainable, save_text_adapter

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class PreferencePair:
    """The user preferred `chosen` to `rejected` as the answer to `prompt` (the model's input)."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class TrainedPreferenceAdapter:
    """A DPO-trained LoRA (zip bytes) with its loss per step and how it moved the pairs.

    `margin_before`/`margin_after`: mean over pairs of log π(chosen) − log π(rejected) under
    the base model and under the adapter; training should raise it. `accuracy_after`: the
    share of pairs whose implicit reward prefers the chosen answer. `resumed_from`: the step a
    checkpoint let this run go on from (0: it started afresh).
    """

    data: bytes
    losses: list[float]
    margin_before: float
    margin_after: float
    accuracy_after: float
    resumed_from: int = 0


def dpo_loss(policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any,
             beta: float) -> tuple[Any, Any]:
    """(mean DPO loss, per-pair implicit reward margin β·Δ) from summed answer log-probs."""
    import torch.nn.functional as F

    margin = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    return -F.logsigmoid(margin).mean(), margin


def train_text_dpo(ref: str, pairs: Sequence[PreferencePair], steps: int = 20, beta: float = 0.1, rank: int = 8,
                   learning_rate: float = 5e-4, batch_size: int = 4, seed: int = 0, max_length: int = 512,
                   target_modules: str | list[str] = "all-linear",
                   gguf_file: str | None = None,
                   should_stop: Callable[[], bool] | None = None,
                   checkpoint_dir: Path | None = None, checkpoint_every: int = 10) -> TrainedPreferenceAdapter:
    """Fit a LoRA on `ref` to preference `pairs` by DPO (`batch_size` pairs per step, cycling).

    `should_stop` is asked before each step; True ends training with what was learned so far.
    With `checkpoint_dir`, a checkpoint is written every `checkpoint_every` steps (and when
    stopped), and a later call with the same inputs goes on from it, bit for bit.
    """
    import torch

    if not pairs:
        raise InvalidInputError("DPO needs at least one (prompt, chosen, rejected) pair")
    if any(p.chosen == p.rejected for p in pairs):
        raise InvalidInputError("a preference pair has the same chosen and rejected answer: nothing to learn")
    digest = fingerprint(kind="dpo", ref=ref, gguf_file=gguf_file,
                         pairs=digests(f"{p.prompt}\0{p.chosen}\0{p.rejected}" for p in pairs), beta=beta, rank=rank,
                         lr=learning_rate, batch_size=batch_size, seed=seed, max_length=max_length,
                         target_modules=target_modules)
    tokenizer, model = load_trainable(ref, gguf_file, rank, target_modules, seed)
    encoded = [(_encode(tokenizer, p.prompt, p.chosen, max_length), _encode(tokenizer, p.prompt, p.rejected, max_length))
               for p in pairs]
    with torch.no_grad(), model.disable_adapter():
        ref_logps = _pair_logps(model, range(len(pairs)), encoded)

    def loss_fn(step: int) -> Any:
        batch = [(step * batch_size + i) % len(pairs) for i in range(min(batch_size, len(pairs)))]
        chosen, rejected = _pair_logps(model, batch, encoded)
        return dpo_loss(chosen, rejected, ref_logps[0][batch], ref_logps[1][batch], beta)[0]

    loop = TrainingLoop(steps, checkpoint_dir, checkpoint_every, should_stop, desc="dpo")
    losses, start = fit_trainable(model, loss_fn, learning_rate, loop, digest)
    with torch.no_grad():
        chosen, rejected = _pair_logps(model, range(len(pairs)), encoded)
        _, rewards = dpo_loss(chosen, rejected, ref_logps[0], ref_logps[1], beta)
    return TrainedPreferenceAdapter(
        data=save_text_adapter(model, "default"), losses=losses,
        margin_before=float((ref_logps[0] - ref_logps[1]).mean()), margin_after=float((chosen - rejected).mean()),
        accuracy_after=float((rewards > 0).float().mean()), resumed_from=start)


def _encode(tokenizer: Any, prompt: str, answer: str, max_length: int) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids ending in EOS), as the serving backend tokenizes the prompt.

    A long prompt keeps its last tokens (as when serving); a long answer keeps its first.
    """
    text, templated = prompt_text(tokenizer, prompt)
    prompt_ids = tokenizer(text, add_special_tokens=not templated)["input_ids"]
    answer_ids = tokenizer(answer + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids[: max(1, max_length // 2)]
    return prompt_ids[-(max_length - len(answer_ids)):], answer_ids


def _pair_logps(model: Any, indices: Sequence[int], encoded: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """Summed answer log-probs of the chosen and of the rejected answers of pairs `indices`."""
    sequences = [encoded[i][0] for i in indices] + [encoded[i][1] for i in indices]
    logps = _answer_logps(model, sequences)
    return logps[: len(indices)], logps[len(indices):]


def _answer_logps(model: Any, sequences: list[tuple[list[int], list[int]]]) -> torch.Tensor:
    """log π(answer | prompt) of each (prompt ids, answer ids), in one right-padded batch."""
    import torch

    width = max(len(p) + len(a) for p, a in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros(len(sequences), width, dtype=torch.long)
    scored = torch.zeros(len(sequences), width, dtype=torch.bool)  # positions whose token is an answer token
    for row, (prompt, answer) in enumerate(sequences):
        n = len(prompt) + len(answer)
        ids[row, :n] = torch.tensor(prompt + answer)
        mask[row, :n] = 1
        scored[row, len(prompt):n] = True
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    token_logps = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    return (token_logps * scored[:, 1:]).sum(-1)


__all__ = ["PreferencePair", "TrainedPreferenceAdapter", "dpo_loss", "train_text_dpo"]
