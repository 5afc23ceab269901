"""SASRec (Kang & McAuley 2018) for the MovieLens harness: the sequential baseline.

Why a sequential baseline: the preference model weighs recent ratings (time decay, a short-term
state); SASRec is the standard model that learns order from the data, so the two are compared
on the same users. The model is the paper's: item + learned position embeddings, pre-norm
causal self-attention blocks, dropout, the item embedding shared as the output layer.

Training sees every user's TRAINING sequence only (the held-out last rating never): each epoch
cuts each sequence into windows of `max_len` so that every prefix's next item is a target
exactly once, the cut points shifting at random between epochs. Loss `ce` is softmax
cross-entropy over the whole catalogue (Klenitskiy & Vasilev 2023 found SASRec trained so far
stronger than with the paper's `bce`, one sampled negative per position, kept here to compare).
Early stopping on the tuning users' NDCG@10 (patience `patience`, at most `max_seconds`), the
best epoch's weights kept. Imports torch at module import: `unipgen.eval.recsys_baselines`
imports this module only when it runs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from unipgen.errors import InvalidInputError

if TYPE_CHECKING:
    from unipgen.eval.movielens import Evaluator
    from unipgen.eval.movielens_data import Baseline, MovieLens, Split

Loss = Literal["ce", "bce"]


@dataclass(frozen=True)
class SasRecConfig:
    """Model size and training budget (the defaults are the full harness run's, picked on the
    even-userId tuning users: docs/benchmarks.md, MovieLens baselines)."""

    hidden: int = 64
    blocks: int = 2
    heads: int = 2
    max_len: int = 200
    dropout: float = 0.2
    lr: float = 2e-3
    loss: Loss = "ce"
    batch_size: int = 8  # windows per step: more steps per epoch converged in fewer epochs than 16 or 32
    max_epochs: int = 8  # the budget: ~25-30 s an epoch on one core
    patience: int = 4
    max_seconds: float = 300.0  # a guard for a slow or loaded machine: stop, keeping the best epoch so far
    decay: bool = False  # lr falls linearly to 0 over `max_epochs`
    every_prefix: bool = True  # False: only each user's latest `max_len` targets (a quick check)

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "bce"):
            raise InvalidInputError(f"SASRec loss {self.loss!r}: expected 'ce' or 'bce'")
        if self.hidden % self.heads:
            raise InvalidInputError(f"SASRec hidden {self.hidden} is not a multiple of heads {self.heads}")

    @classmethod
    def quick(cls) -> SasRecConfig:
        """A harness check: one epoch over each user's last 50 items (seconds, not minutes)."""
        return cls(max_len=50, every_prefix=False, max_epochs=1, patience=1, max_seconds=30.0)


class SasRec(nn.Module):
    """Causal self-attention over item ids (0 = padding, items are 1..n_items)."""

    def __init__(self, n_items: int, config: SasRecConfig) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, config.hidden, padding_idx=0)
        self.positions = nn.Embedding(config.max_len, config.hidden)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.hidden, config.heads, dim_feedforward=config.hidden, dropout=config.dropout,
            batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, config.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden)
        nn.init.normal_(self.items.weight, std=0.05)
        nn.init.normal_(self.positions.weight, std=0.05)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state (batch, length, hidden) at every position, seeing only earlier items.
        Sequences are right-padded, so no real position ever attends to padding."""
        length = seq.shape[1]
        h = self.items(seq) * self.items.embedding_dim**0.5 + self.positions.weight[:length]
        mask = nn.Transformer.generate_square_subsequent_mask(length)
        return self.norm(self.encoder(self.dropout(h), mask=mask, is_causal=True))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores of every real item (index i = catalogue item i)."""
        return hidden @ self.items.weight[1:].T


def user_sequences(data: MovieLens, split: Split) -> list[np.ndarray]:
    """Each user's training items in time order (split position order), as ids 1..n_items."""
    return [data.item[s:e] + 1 for s, e in zip(split.starts, split.ends)]


def target_blocks(n: int, max_len: int, first: int) -> list[tuple[int, int]]:
    """Cut the targets 1..n-1 of an n-item sequence (target t is predicted from items [0, t))
    into [lo, hi) blocks of at most `max_len`, the latest block `first` long: every target in
    exactly one block, so one epoch trains on every prefix once."""
    blocks, hi, size = [], n, first
    while hi > 1:
        lo = max(1, hi - size)
        blocks.append((lo, hi))
        hi, size = lo, max_len
    return blocks


def windows(
    seqs: list[np.ndarray], max_len: int, rng: np.random.Generator, every_prefix: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch's windows: inputs and next-item targets (0-based item index), right-padded with
    0 (target −1 = no loss). Each window holds the `max_len` items before its block's last
    target, so a target late in a short block still sees a full context. `every_prefix=False`:
    only each sequence's latest block of `max_len` targets."""
    rows_in, rows_out = [], []
    for seq in seqs:
        first = int(rng.integers(1, max_len + 1)) if every_prefix else max_len
        blocks = target_blocks(len(seq), max_len, first)
        for lo, hi in blocks if every_prefix else blocks[:1]:
            start = max(0, hi - 1 - max_len)
            inputs = np.zeros(max_len, dtype=np.int64)
            targets = np.full(max_len, -1, dtype=np.int64)
            inputs[: hi - 1 - start] = seq[start : hi - 1]
            targets[lo - 1 - start : hi - 1 - start] = seq[lo:hi] - 1
            rows_in.append(inputs)
            rows_out.append(targets)
    if not rows_in:
        return np.zeros((0, max_len), dtype=np.int64), np.zeros((0, max_len), dtype=np.int64)
    return np.stack(rows_in), np.stack(rows_out)


def score_users(model: SasRec, seqs: list[np.ndarray], rows: np.ndarray, max_len: int) -> np.ndarray:
    """Scores (len(rows) × items) from each user's last `max_len` training items."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), 256):
            batch = [seqs[r][-max_len:] for r in rows[start : start + 256]]
            inputs = np.zeros((len(batch), max(1, max(len(s) for s in batch))), dtype=np.int64)
            last = np.zeros(len(batch), dtype=np.int64)
            for i, seq in enumerate(batch):
                inputs[i, : len(seq)] = seq
                last[i] = max(len(seq) - 1, 0)
            hidden = model(torch.from_numpy(inputs))[torch.arange(len(batch)), torch.from_numpy(last)]
            out.append(model.logits(hidden).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.items.num_embeddings - 1))


def batch_loss(model: SasRec, x: torch.Tensor, y: torch.Tensor, loss: Loss, generator: torch.Generator) -> torch.Tensor:
    """Mean loss over the real targets of one batch. `ce`: softmax over every item; `bce`: the
    paper's sigmoid loss on the target against one uniformly sampled item."""
    valid = y >= 0
    hidden, targets = model(x)[valid], y[valid]
    if loss == "ce":
        return nn.functional.cross_entropy(model.logits(hidden), targets)
    n_items = model.items.num_embeddings - 1
    negatives = torch.randint(n_items, targets.shape, generator=generator)
    table = model.items.weight[1:]
    positive = (hidden * table[targets]).sum(-1)
    negative = (hidden * table[negatives]).sum(-1)
    return -(nn.functional.logsigmoid(positive) + nn.functional.logsigmoid(-negative)).mean()


def train_epoch(
    model: SasRec, optimizer: torch.optim.Optimizer, seqs: list[np.ndarray], config: SasRecConfig,
    rng: np.random.Generator, generator: torch.Generator, epoch: int = 1,
) -> float:
    """One pass over every prefix of every sequence (`epoch`: 1-based, for the lr decay); mean
    loss per batch."""
    model.train()
    inputs, targets = windows(seqs, config.max_len, rng, config.every_prefix)
    order = rng.permutation(len(inputs))
    losses = []
    for start in range(0, len(order), config.batch_size):
        if config.decay:
            done = (epoch - 1 + start / len(order)) / config.max_epochs
            for group in optimizer.param_groups:
                group["lr"] = config.lr * (1.0 - done)
        idx = order[start : start + config.batch_size]
        width = int((inputs[idx] > 0).sum(axis=1).max())  # right-padded: drop all-padding columns
        x, y = torch.from_numpy(inputs[idx, :width]), torch.from_numpy(targets[idx, :width])
        loss = batch_loss(model, x, y, config.loss, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else 0.0


def train(
    seqs: list[np.ndarray],
    n_items: int,
    config: SasRecConfig,
    validate: Callable[[SasRec], float] | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[SasRec, int, float]:
    """Train on `seqs`; with `validate` (model → NDCG), keep the best epoch and stop after
    `patience` epochs without a gain. Returns (model, best epoch, its validation score)."""
    say = log or (lambda _message: None)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SasRec(n_items, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
    best, best_epoch, best_state, started = -np.inf, 0, None, time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        loss = train_epoch(model, optimizer, seqs, config, rng, generator, epoch)
        score = validate(model) if validate is not None else -loss
        say(f"SASRec epoch {epoch}: loss {loss:.3f}" + (f", tuning NDCG@10 {score:.4f}" if validate else "")
            + f" ({time.perf_counter() - started:.0f} s)")
        if score > best + 1e-9:
            best, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
        if time.perf_counter() - started > config.max_seconds:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, best_epoch, float(best)


def fit_and_score(
    data: MovieLens,
    split: Split,
    tuning: Evaluator,
    test: Evaluator,
    config: SasRecConfig,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Baseline:
    """Train on every user's training sequence, early-stop on `tuning`, score `test`."""
    from unipgen.eval.movielens_data import Baseline, evaluator_ndcg

    seqs = user_sequences(data, split)
    trials: list[dict[str, float]] = []  # the tuning NDCG@10 after every epoch

    def validate(model: SasRec) -> float:
        ndcg = evaluator_ndcg(tuning, score_users(model, seqs, tuning.users, config.max_len))
        trials.append({"epoch": len(trials) + 1, "ndcg": round(ndcg, 4)})
        return ndcg

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on 2 shared cores can be far slower
    try:
        model, epoch, ndcg = train(seqs, data.n_items, config, validate, seed, log)
        scores = score_users(model, seqs, test.users, config.max_len)
    finally:
        torch.set_num_threads(threads)
    params = {**asdict(config), "best_epoch": epoch}
    return Baseline("sasrec", scores, params, round(ndcg, 4), trials=trials)
