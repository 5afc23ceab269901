"""Text metrics against hand-computed values and the reference packages (rouge-score, sacrebleu,
nltk, scikit-learn; bert-score when installed), on a tiny random BERT for BERTScore."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from unipgen.errors import InvalidInputError
from unipgen.eval import text_metrics as tm

S = math.sqrt(0.5)


# -- ROUGE, BLEU, METEOR ----------------------------------------------------------------------


def test_rouge_by_hand() -> None:
    # 5 of 6 unigrams shared; the longest common subsequence "the on the" is 3 of 6.
    scores = tm.rouge(["the mat sat on the cat"], ["The cat is on the mat."])
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rougeL"] == pytest.approx(0.5)
    assert tm.rouge1(["the cat sat"], ["a dog ran"]) == 0.0
    assert tm.rouge_l(["a b", "x"], ["a b", "y"]) == pytest.approx(0.5)  # the mean over the corpus


def test_rouge_best_reference_and_stemming() -> None:
    assert tm.rouge1(["cats running"], [["dogs barking", "cats running"]]) == 1.0
    assert tm.rouge1(["cats running"], ["cat runs"]) == 0.0
    assert tm.rouge1(["cats running"], ["cat runs"], use_stemmer=True) == 1.0
    assert tm.rouge1(["Привет мир"], ["Привет мир"]) == 0.0  # rouge-score keeps ASCII tokens only


def test_bleu_by_hand() -> None:
    # Clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths, so no brevity penalty.
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert tm.bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected, abs=1e-6)
    assert tm.bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(100.0)


def test_bleu_pools_counts_and_takes_varied_references() -> None:
    import sacrebleu

    preds = ["the cat sat on the mat", "a dog ran in the park today"]
    refs = [["the cat sat on a mat"], ["a dog ran in a park", "the dog ran in the park today"]]
    expected = sacrebleu.corpus_bleu(preds, [["the cat sat on a mat", "a dog ran in a park"],
                                             [None, "the dog ran in the park today"]]).score
    assert tm.bleu(preds, refs) == pytest.approx(expected)
    mean_of_sentences = sum(tm.bleu([p], [r]) for p, r in zip(preds, refs, strict=True)) / 2
    assert tm.bleu(preds, refs) != pytest.approx(mean_of_sentences)


def test_meteor_exact_and_stem_by_hand() -> None:
    # All 4 tokens align (cats ~ cat by Porter stem; "." is a token) in 1 chunk: penalty 0.5 * (1/4)^3.
    assert tm.meteor(["The cats sat."], ["the cat sat ."]) == pytest.approx(1 - 0.5 / 64)
    # Same words, 2 chunks ("sat" | "the cat"): penalty 0.5 * (2/3)^3.
    assert tm.meteor(["sat the cat"], ["the cat sat"]) == pytest.approx(1 - 0.5 * 8 / 27)
    assert tm.meteor(["nothing alike"], ["the cat sat"]) == 0.0


def test_meteor_matches_nltk_doctest() -> None:
    # nltk's documented value for this pair (its match needs no synonym).
    hyp = "It is a guide to action which ensures that the military always obeys the commands of the party"
    ref = "It is a guide to action that ensures that the military will forever heed Party commands"
    assert round(tm.meteor([hyp], [ref]), 4) == 0.6944


@pytest.mark.skipif(not Path("/usr/share/wordnet/data.noun").is_file(),
                    reason="WordNet database absent (apt-get install wordnet-base)")
def test_meteor_synonym_stage_with_debian_wordnet() -> None:
    # car ~ auto only through WordNet. Without it: 2 of 3 words in 1 chunk, F = 2/3, penalty
    # 0.5 * (1/2)^3; with it: 3 of 3 in 1 chunk.
    assert tm.meteor(["the red car"], ["the red auto"]) == pytest.approx(2 / 3 * (1 - 0.5 / 8))
    assert tm.meteor(["the red car"], ["the red auto"], wordnet="/usr/share/wordnet") == pytest.approx(1 - 0.5 / 27)


def test_meteor_rejects_a_folder_without_wordnet(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no WordNet"):
        tm.meteor(["a"], ["a"], wordnet=tmp_path)


@pytest.mark.parametrize("metric", [tm.rouge, tm.bleu, tm.meteor])
def test_text_input_validation(metric: Callable[..., object]) -> None:
    with pytest.raises(InvalidInputError, match="length mismatch"):
        metric(["a", "b"], ["a"])
    with pytest.raises(InvalidInputError, match="empty corpus"):
        metric([], [])
    with pytest.raises(InvalidInputError, match="not one string"):
        metric("a b", "a b")
    with pytest.raises(InvalidInputError, match="non-empty list"):
        metric(["a"], [[]])
    with pytest.raises(InvalidInputError, match="not a string"):
        metric([None], ["a"])


# -- BERTScore --------------------------------------------------------------------------------


def test_greedy_match_by_hand() -> None:
    pred = [[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]]
    ref = [[3.0, 0.0], [1.0, 1.0]]
    # Cosines: pred rows vs ref rows = [[1, S], [0, S], [0, S]].
    p, r, f = tm.greedy_match(pred, ref)
    assert (p, r) == pytest.approx(((1 + 2 * S) / 3, (1 + S) / 2))
    assert f == pytest.approx(2 * p * r / (p + r))
    p, r, _ = tm.greedy_match(pred, ref, prediction_weights=[2, 1, 0], reference_weights=[0, 1])
    assert (p, r) == pytest.approx(((2 + S) / 3, S))
    assert tm.greedy_match(np.zeros((0, 2)), ref) == (0.0, 0.0, 0.0)


def test_bert_score_pipeline_equals_greedy_match_on_the_encoder_states() -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    directory = tm.tiny_bert_dir()
    tokenizer, model = AutoTokenizer.from_pretrained(directory), AutoModel.from_pretrained(directory).eval()

    def states(text: str, layer: int) -> tuple[np.ndarray, list[float]]:
        batch = tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
        special = batch.pop("special_tokens_mask")[0]
        with torch.inference_mode():
            hidden = model(**batch, output_hidden_states=True).hidden_states[layer][0]
        return hidden.double().numpy(), (1 - special).double().tolist()  # [CLS]/[SEP] weigh 0

    pred, ref = "a photo of a dog in the snow", "a dog on the beach"
    for layer in (1, 2):
        (pe, pw), (re_, rw) = states(pred, layer), states(ref, layer)
        expected = tm.greedy_match(pe, re_, pw, rw)
        got = tm.bert_score([pred, pred], [ref, ref], model=str(directory), layer=layer, batch_size=1)
        assert got.per_pair[0] == pytest.approx(expected) and got.per_pair[1] == pytest.approx(expected)
        assert got.f1 == pytest.approx(expected[2])
    assert tm.bert_score([pred], [ref]).per_pair[0] == pytest.approx(expected)  # tiny-random, last layer


def test_bert_score_properties() -> None:
    same = tm.bert_score(["red cube on the floor"], ["red cube on the floor"])
    assert (same.precision, same.recall, same.f1) == pytest.approx((1.0, 1.0, 1.0))
    multi = tm.bert_score(["red cube"], [["green forest river", "red cube"]])
    assert multi.f1 == pytest.approx(1.0)  # the best reference counts
    plain = tm.bert_score(["a cat", "the dog in the city"], ["a cat in the city", "a dog"])
    weighted = tm.bert_score(["a cat", "the dog in the city"], ["a cat in the city", "a dog"], idf=True)
    assert len(plain.per_pair) == 2 and -1 <= plain.f1 <= 1
    assert not np.allclose(weighted.per_pair, plain.per_pair)
    assert tm.bert_score([""], ["a dog"]).per_pair == [(0.0, 0.0, 0.0)]
    with pytest.raises(InvalidInputError, match="length mismatch"):
        tm.bert_score(["a"], [])


def test_bert_score_matches_the_bert_score_package() -> None:
    import bert_score  # a dependency of the eval extra

    directory = str(tm.tiny_bert_dir())
    preds, refs = ["a photo of a dog", "red cube on the wooden floor"], ["a dog photo", "blue cube on the floor"]
    for idf in (False, True):
        p, r, f = bert_score.score(preds, refs, model_type=directory, num_layers=2, idf=idf)
        ours = tm.bert_score(preds, refs, model=directory, layer=2, idf=idf)
        assert np.allclose(np.array(ours.per_pair), np.stack([p.numpy(), r.numpy(), f.numpy()], axis=1), atol=1e-5)


def test_bert_score_with_real_weights_that_ship_offline_matches_the_package() -> None:
    """The packaged all-MiniLM-L6-v2 (real weights, no model hub): the same P, R, F1 as `bert-score`."""
    import bert_score

    from unipgen.core.encoders.text import DEFAULT_TEXT_MODEL, resolve_ref

    path = resolve_ref(DEFAULT_TEXT_MODEL)
    preds, refs = ["a photo of a dog in the snow", "the cat sleeps"], ["a dog on the beach", "a cat is sleeping"]
    p, r, f = bert_score.score(preds, refs, model_type=path, num_layers=6)
    ours = tm.bert_score(preds, refs, model=path, layer=6)
    assert np.allclose(np.array(ours.per_pair), np.stack([p.numpy(), r.numpy(), f.numpy()], axis=1), atol=1e-5)
    assert ours.per_pair[1][2] > ours.per_pair[0][2]  # real weights: the paraphrase scores higher


# -- labels and ratings -----------------------------------------------------------------------


def test_classification_by_hand_and_against_sklearn() -> None:
    golds = ["drama", "comedy", "drama", "horror", "comedy", "drama"]
    preds = ["drama", "drama", None, "horror", "comedy", "comedy"]
    assert tm.accuracy(preds, golds) == pytest.approx(3 / 6)
    # drama: tp 1, fp 1, fn 2 -> 2/5; comedy: tp 1, fp 1, fn 1 -> 1/2; horror: 1; western: 0.
    assert tm.macro_f1(preds, golds) == pytest.approx((0.4 + 0.5 + 1) / 3)
    labels = ["drama", "comedy", "horror", "western"]
    assert tm.macro_f1(preds, golds, labels) == pytest.approx((0.4 + 0.5 + 1 + 0) / 4)
    metrics = pytest.importorskip("sklearn.metrics")
    filled = [p if p is not None else "<none>" for p in preds]
    assert tm.accuracy(preds, golds) == pytest.approx(metrics.accuracy_score(golds, filled))
    assert tm.macro_f1(preds, golds, labels) == pytest.approx(
        metrics.f1_score(golds, filled, labels=labels, average="macro", zero_division=0))
    assert tm.macro_f1(["a", "b", "b"], ["a", "a", "c"]) == pytest.approx(
        metrics.f1_score(["a", "a", "c"], ["a", "b", "b"], average="macro", zero_division=0))


def test_ratings_by_hand_and_against_sklearn() -> None:
    preds, golds = [5, 3, 1, 4.0], [4, 3, 3, 5]
    assert tm.mae(preds, golds) == pytest.approx(1.0)
    assert tm.rmse(preds, golds) == pytest.approx(math.sqrt(6 / 4))
    metrics = pytest.importorskip("sklearn.metrics")
    assert tm.mae(preds, golds) == pytest.approx(metrics.mean_absolute_error(golds, preds))
    assert tm.rmse(preds, golds) == pytest.approx(math.sqrt(metrics.mean_squared_error(golds, preds)))


def test_label_and_rating_validation() -> None:
    with pytest.raises(InvalidInputError, match="length mismatch"):
        tm.accuracy(["a"], ["a", "b"])
    with pytest.raises(InvalidInputError, match="empty corpus"):
        tm.macro_f1([], [])
    with pytest.raises(InvalidInputError, match="not a number"):
        tm.mae([None], [3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="not a number"):
        tm.rmse([float("nan")], [3])
