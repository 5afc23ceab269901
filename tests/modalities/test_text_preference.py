"""DPO on the tiny LM: the loss against hand-computed values, training moves the user's pairs,
and the adapter serves through the text backend for its own rows only."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch

from tests.helpers import stop_after
from tests.modalities.test_text import request, texts
from unipgen.errors import InvalidInputError
from unipgen.modalities.text import TransformersTextBackend
from unipgen.modalities.text_preference import PreferencePair, dpo_loss, train_text_dpo
from unipgen.schema.context import AdapterRef

torch.set_num_threads(1)
PAIRS = [PreferencePair("Suggest a film for tonight", "A calm drama about the sea.", "Explosions! Cars! Action!"),
         PreferencePair("What should I read?", "A quiet novel about a lighthouse.", "A thriller full of chases.")]


def test_dpo_loss_matches_hand_computed_values() -> None:
    # pair 1: β·((−1 − −1.5) − (−2 − −1.5)) = 0.1·(0.5 + 0.5) = 0.1; pair 2: 0.1·((−3 − −1) − (−1 − −1)) = −0.2
    loss, margins = dpo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0]),
                             torch.tensor([-1.5, -1.0]), torch.tensor([-1.5, -1.0]), beta=0.1)
    assert margins.tolist() == pytest.approx([0.1, -0.2])
    expected = (math.log1p(math.exp(-0.1)) + math.log1p(math.exp(0.2))) / 2  # −log σ(x) = log(1 + e^−x)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


@pytest.fixture(scope="module")
def trained():  # noqa: ANN201
    return train_text_dpo("tiny-random", PAIRS, steps=8, learning_rate=5e-3, seed=0)


def test_training_prefers_the_chosen_answers(trained) -> None:  # noqa: ANN001
    assert trained.losses[0] == pytest.approx(math.log(2), abs=1e-4)  # the fresh LoRA is the reference
    assert trained.losses[-1] < trained.losses[0]
    assert trained.margin_after > trained.margin_before
    assert trained.accuracy_after == 1.0


def test_the_adapter_changes_only_its_own_rows(trained) -> None:  # noqa: ANN001
    sha = hashlib.sha256(trained.data).hexdigest()
    adapter = AdapterRef(key="dpo-1", method="dpo", blob_sha=sha, meta={"modality": "text"})
    backend = TransformersTextBackend(temperature=0.0)
    blobs = {sha: trained.data}.__getitem__
    base = texts(backend.generate([request(p.prompt) for p in PAIRS], blobs))
    mixed = texts(backend.generate([request(PAIRS[0].prompt, adapter=adapter), request(PAIRS[1].prompt)], blobs))
    assert mixed[1] == base[1]  # the other user's row is untouched
    assert mixed[0] != base[0]  # the adapter's row follows the adapter


@pytest.mark.parametrize(("pairs", "message"), [
    ([], "at least one"),
    ([PreferencePair("p", "same", "same")], "same chosen and rejected"),
])
def test_bad_pairs_are_refused(pairs: list, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        train_text_dpo("tiny-random", pairs, steps=1)


def test_dpo_stopped_then_resumed_equals_uninterrupted(trained, tmp_path: Path) -> None:
    args = {"steps": 8, "learning_rate": 5e-3, "seed": 0, "checkpoint_every": 3}
    cut = train_text_dpo("tiny-random", PAIRS, checkpoint_dir=tmp_path, should_stop=stop_after(5), **args)
    assert len(cut.losses) == 5
    resumed = train_text_dpo("tiny-random", PAIRS, checkpoint_dir=tmp_path, **args)
    assert resumed.resumed_from == 5 and trained.resumed_from == 0
    assert resumed.losses == trained.losses and resumed.data == trained.data  # bit for bit
    assert resumed.margin_after == trained.margin_after
    with pytest.raises(InvalidInputError, match="different training run"):  # another seed: not this run's
        train_text_dpo("tiny-random", PAIRS, checkpoint_dir=tmp_path, **{**args, "seed": 1})
