"""A small SASRec (Kang & McAuley 2018) for the MovieLens harness: the sequential baseline.

Why a sequential baseline: the preference model weighs recent ratings (time decay, a short-term
state); SASRec is the standard model that learns order from the data, so the two are compared
on the same users. Kept small so it trains in minutes on 2 CPU cores: item + position
embeddings, 2 pre-norm causal self-attention blocks, hidden 64, the last `max_len` items; full
softmax cross-entropy over the catalogue at every position (converges in far fewer epochs than
the paper's one-negative BCE), Adam; each epoch draws one random window per user (cutting every
sequence into windows each epoch was 3x slower and no better on MovieLens); early stopped
on the tuning users' NDCG@10 (patience `patience`), the best epoch's weights kept. Imports torch
at module import: `unipgen.eval.recsys_baselines` imports this module only when it runs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from unipgen.eval.movielens import Evaluator, MovieLens, Split
    from unipgen.eval.recsys_baselines import Baseline


@dataclass(frozen=True)
class SasRecConfig:
    """Model size and training budget (the defaults are the full harness run's)."""

    hidden: int = 64
    blocks: int = 2
    heads: int = 2
    max_len: int = 50
    dropout: float = 0.2
    lr: float = 1e-3
    batch_size: int = 64
    max_epochs: int = 30
    patience: int = 3
    max_seconds: float = 240.0  # stop training after this, keeping the best epoch so far

    @classmethod
    def quick(cls) -> SasRecConfig:
        """A harness check: one epoch."""
        return cls(max_epochs=1, patience=1, max_seconds=30.0)


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


def _windows(seqs: list[np.ndarray], max_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random window per user of ≥ 2 items: inputs and next-item targets, right-padded
    with 0 (target −1 = no loss)."""
    usable = [s for s in seqs if len(s) >= 2]
    inputs = np.zeros((len(usable), max_len), dtype=np.int64)
    targets = np.full((len(usable), max_len), -1, dtype=np.int64)
    for row, seq in enumerate(usable):
        end = int(rng.integers(2, len(seq) + 1))
        window = seq[max(0, end - max_len - 1) : end]
        inputs[row, : len(window) - 1] = window[:-1]
        targets[row, : len(window) - 1] = window[1:] - 1
    return inputs, targets


def score_users(model: SasRec, seqs: list[np.ndarray], rows: np.ndarray, max_len: int) -> np.ndarray:
    """Scores (len(rows) × items) from each user's last `max_len` training items."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), 256):
            batch = [seqs[r][-max_len:] for r in rows[start : start + 256]]
            inputs = np.zeros((len(batch), max_len), dtype=np.int64)
            last = np.zeros(len(batch), dtype=np.int64)
            for i, seq in enumerate(batch):
                inputs[i, : len(seq)] = seq
                last[i] = max(len(seq) - 1, 0)
            hidden = model(torch.from_numpy(inputs))[torch.arange(len(batch)), torch.from_numpy(last)]
            out.append(model.logits(hidden).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.items.num_embeddings - 1))


def train_epoch(
    model: SasRec, optimizer: torch.optim.Optimizer, seqs: list[np.ndarray], config: SasRecConfig,
    rng: np.random.Generator,
) -> float:
    """One pass over one random window per user; mean cross-entropy."""
    model.train()
    inputs, targets = _windows(seqs, config.max_len, rng)
    order = rng.permutation(len(inputs))
    losses = []
    for start in range(0, len(order), config.batch_size):
        idx = order[start : start + config.batch_size]
        x, y = torch.from_numpy(inputs[idx]), torch.from_numpy(targets[idx])
        logits = model.logits(model(x))
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1)
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
    rng = np.random.default_rng(seed)
    model = SasRec(n_items, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    best, best_epoch, best_state, started = -1.0, 0, None, time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        loss = train_epoch(model, optimizer, seqs, config, rng)
        score = validate(model) if validate is not None else -loss
        say(f"SASRec epoch {epoch}: loss {loss:.3f}" + (f", tuning NDCG@10 {score:.4f}" if validate else ""))
        if score > best + 1e-9:
            best, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
        if time.perf_counter() - started > config.max_seconds:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, best_epoch, best


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
    from unipgen.eval.recsys_baselines import Baseline, evaluator_ndcg

    seqs = user_sequences(data, split)

    def validate(model: SasRec) -> float:
        return evaluator_ndcg(tuning, score_users(model, seqs, tuning.users, config.max_len))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads on 2 shared cores can be far slower
    try:
        model, epoch, ndcg = train(seqs, data.n_items, config, validate, seed, log)
        scores = score_users(model, seqs, test.users, config.max_len)
    finally:
        torch.set_num_threads(threads)
    params = {**asdict(config), "best_epoch": epoch}
    return Baseline("sasrec", scores, params, round(ndcg, 4))
