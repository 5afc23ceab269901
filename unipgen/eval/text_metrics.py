"""Metrics for generated text (LaMP-style): ROUGE, BLEU, METEOR, BERTScore, and label / rating scores.

Every function takes the generated texts (`predictions`) and what they are compared with
(`references`: one string per prediction, or a list of acceptable strings per prediction) and
returns the corpus figure. The lexical scores wrap the reference implementations (Google's
`rouge-score`, `sacrebleu`, nltk's METEOR), so the numbers are comparable with published ones.
BERTScore is computed here (greedy matching of token embeddings, as Zhang et al. 2020) with any
transformers encoder, so that it runs offline on a local model. Bad input raises InvalidInputError.
Heavy libraries are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from unipgen.errors import InvalidInputError
from unipgen.tiny import TINY_RANDOM

References = Sequence[str] | Sequence[Sequence[str]]

TINY_BERT = TINY_RANDOM
_TINY_VERSION = "1"


def _ref_lists(predictions: Sequence[str], references: References) -> list[list[str]]:
    """Check the pairing and return each prediction's references as a non-empty list."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise InvalidInputError("predictions and references must be sequences of strings, not one string")
    if len(predictions) == 0:
        raise InvalidInputError("empty corpus: no predictions to score")
    if len(predictions) != len(references):
        raise InvalidInputError(f"length mismatch: {len(predictions)} predictions but {len(references)} references")
    out = []
    for i, (prediction, refs) in enumerate(zip(predictions, references, strict=True)):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not isinstance(prediction, str):
            raise InvalidInputError(f"prediction {i} is a {type(prediction).__name__}, not a string")
        if not refs or not all(isinstance(r, str) for r in refs):
            raise InvalidInputError(f"references of prediction {i} must be a string or a non-empty list of strings")
        out.append(refs)
    return out


# -- lexical overlap ------------------------------------------------------------------------------


def rouge(predictions: Sequence[str], references: References, use_stemmer: bool = False) -> dict[str, float]:
    """Mean ROUGE-1 and ROUGE-L F1 over the corpus, each in [0, 1] (1 = same words / same order).

    ROUGE-1 F1 is the harmonic mean of unigram precision and recall (clipped counts); ROUGE-L F1
    uses the longest common subsequence instead, so it rewards the same word order. Computed by
    Google's `rouge-score` (the scorer LaMP and HF `evaluate` use): lower case, tokens are runs of
    ASCII letters and digits (other scripts score 0), Porter stemming only if `use_stemmer`.
    With several references a prediction gets its best one. Returns {"rouge1": .., "rougeL": ..}.
    """
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=use_stemmer)
    totals = {"rouge1": 0.0, "rougeL": 0.0}
    pairs = list(zip(predictions, _ref_lists(predictions, references), strict=True))
    for prediction, refs in pairs:
        scores = scorer.score_multi(refs, prediction)
        for key in totals:
            totals[key] += scores[key].fmeasure
    return {key: value / len(pairs) for key, value in totals.items()}


def rouge1(predictions: Sequence[str], references: References, use_stemmer: bool = False) -> float:
    """Mean ROUGE-1 F1 in [0, 1] (see `rouge`)."""
    return rouge(predictions, references, use_stemmer)["rouge1"]


def rouge_l(predictions: Sequence[str], references: References, use_stemmer: bool = False) -> float:
    """Mean ROUGE-L F1 in [0, 1] (see `rouge`)."""
    return rouge(predictions, references, use_stemmer)["rougeL"]


def bleu(predictions: Sequence[str], references: References, tokenize: str = "13a", lowercase: bool = False) -> float:
    """Corpus BLEU by `sacrebleu`, in [0, 100] (sacrebleu's scale; 100 = identical texts).

    Geometric mean of clipped 1- to 4-gram precisions pooled over the whole corpus (not an
    average of sentence scores), times the brevity penalty. `tokenize` is sacrebleu's tokenizer
    ("13a" = the WMT default, "intl", "char", "none", ...). Predictions may have different numbers
    of references. Short corpora with no 4-gram match score 0 (no smoothing at corpus level).
    """
    import sacrebleu

    refs = _ref_lists(predictions, references)
    width = max(len(r) for r in refs)
    # sacrebleu wants one stream per reference position; None marks a missing reference (which
    # its annotation leaves out).
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(width)]
    bleu = sacrebleu.corpus_bleu(list(predictions), streams,  # type: ignore[arg-type]
                                 tokenize=tokenize, lowercase=lowercase)
    return float(bleu.score)


class _NoWordNet:
    """Stands in for a WordNet reader with no synonyms: nltk's METEOR then matches exact and stem only."""

    @staticmethod
    def synsets(word: str) -> list[Any]:
        return []


# WordNet 3.0's lexicographer files, in file-number order: nltk's reader needs them in a
# `lexnames` file, which Debian's wordnet-base package does not ship.
_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon",
    "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape",
    "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)


@lru_cache(maxsize=2)
def load_wordnet(directory: str) -> Any:
    """nltk's WordNet reader over a folder of WordNet 3.0 database files (index.noun, data.noun, ...).

    Any copy works: an nltk_data `corpora/wordnet` folder, or Debian's `wordnet-base` package
    (/usr/share/wordnet, installed by `apt-get install wordnet-base`). When the folder has no
    `lexnames` file, a copy of it with one is made once under the temp folder (~30 MB).
    """
    import nltk.data
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    source = Path(directory).resolve()
    if not (source / "index.noun").is_file() or not (source / "data.noun").is_file():
        raise InvalidInputError(f"{directory} holds no WordNet database (index.noun, data.noun, ...)")
    root = source
    if not (source / "lexnames").is_file():
        root = Path(tempfile.gettempdir()) / "unipgen-wordnet" / hashlib.sha256(str(source).encode()).hexdigest()[:16]
        if not (root / "lexnames").is_file():
            root.parent.mkdir(parents=True, exist_ok=True)
            scratch = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
            for name in os.listdir(source):
                # Copied (~30 MB), not linked: nltk refuses symlinks out of its root and hard links.
                if name.split(".")[0] in ("index", "data") or name.endswith(".exc"):
                    shutil.copyfile(source / name, scratch / name)
            pos = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
            text = "".join(f"{i:02d}\t{n}\t{pos[n.split('.')[0]]}\n" for i, n in enumerate(_LEXNAMES))
            (scratch / "lexnames").write_text(text)
            try:  # renamed when complete, so a concurrent reader never sees half a copy
                os.rename(scratch, root)
            except OSError:  # another process made it first
                shutil.rmtree(scratch, ignore_errors=True)
    # nltk only opens corpus files under its data path roots (a path sandbox since 3.9).
    for allowed in (str(root), str(source)):
        if allowed not in nltk.data.path:
            nltk.data.path.append(allowed)

    class LocalWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            return None  # the multilingual (OMW) mapping would load nltk_data's own WordNet

    with warnings.catch_warnings():  # "multilingual functions are not available": not used
        warnings.simplefilter("ignore")
        return LocalWordNet(str(root), None)


def meteor_tokens(text: str) -> list[str]:
    """METEOR's tokens: Penn Treebank word tokenization (nltk, no downloaded data), lower case."""
    from nltk.tokenize import TreebankWordTokenizer

    return [token.lower() for token in TreebankWordTokenizer().tokenize(text)]


def meteor(predictions: Sequence[str], references: References, wordnet: str | Path | None = None,
           alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5) -> float:
    """Mean sentence METEOR in [0, 1] (nltk's implementation; 1 = same words in the same order).

    METEOR aligns prediction and reference words in stages (exact, then Porter stem, then WordNet
    synonym), takes F-mean = P·R / (alpha·P + (1-alpha)·R) of the aligned unigrams, and multiplies
    it by 1 - gamma·(chunks / matches)^beta, which penalises matches scattered in many chunks.
    The synonym stage needs WordNet data, which no PyPI package ships: pass `wordnet`, a folder of
    WordNet 3.0 files (see `load_wordnet`), for full METEOR; without it (the default) the synonym
    stage is left out, which can only lower a score (synonyms count as misses). As in nltk, the
    synonym stage sees the stemmed leftovers, so a synonym whose stem differs ("large") is missed.
    The corpus figure
    is the mean of the sentence scores (as HF `evaluate`); several references: the best one.
    """
    from nltk.translate.meteor_score import meteor_score

    reader = load_wordnet(str(wordnet)) if wordnet is not None else _NoWordNet()
    refs = _ref_lists(predictions, references)
    total = 0.0
    for prediction, options in zip(predictions, refs, strict=True):
        total += meteor_score([meteor_tokens(r) for r in options], meteor_tokens(prediction), wordnet=reader,
                              alpha=alpha, beta=beta, gamma=gamma)
    return total / len(refs)


# -- BERTScore ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BertScore:
    """Corpus BERTScore: means of the per-pair values, each a cosine similarity average.

    For unit-normalised contextual token embeddings, precision is the mean over prediction tokens
    of the best cosine to any reference token, recall the same the other way, F1 their harmonic
    mean. Range [-1, 1], in practice [0, 1] for real encoders and not rescaled against a baseline,
    so values are only comparable between runs with the same model and layer.
    """

    precision: float
    recall: float
    f1: float
    per_pair: list[tuple[float, float, float]]


def greedy_match(prediction: Any, reference: Any, prediction_weights: Any = None,
                 reference_weights: Any = None) -> tuple[float, float, float]:
    """(P, R, F1) of BERTScore's greedy matching between two [tokens, dim] embedding arrays.

    Rows are L2-normalised here. Weights (idf; 0 for special tokens) default to uniform; a side
    with no tokens or no weight gives zeros.
    """
    import numpy as np

    c, r = np.asarray(prediction, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if c.size == 0 or r.size == 0:
        return 0.0, 0.0, 0.0
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    sim = c @ r.T
    wc = np.ones(len(c)) if prediction_weights is None else np.asarray(prediction_weights, dtype=np.float64)
    wr = np.ones(len(r)) if reference_weights is None else np.asarray(reference_weights, dtype=np.float64)
    if wc.sum() <= 0 or wr.sum() <= 0:  # only weightless (special) tokens
        return 0.0, 0.0, 0.0
    precision = float((sim.max(axis=1) * wc).sum() / wc.sum())
    recall = float((sim.max(axis=0) * wr).sum() / wr.sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def tiny_bert_dir(seed: int = 0) -> Path:
    """The folder of a tiny random BERT (with the locally trained tiny tokenizer), built on first use."""
    directory = Path(tempfile.gettempdir()) / "unipgen-tiny" / f"bert-v{_TINY_VERSION}-seed{seed}"
    if not (directory / "config.json").is_file():
        directory.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=directory.name + ".", dir=directory.parent))
        build_tiny_bert(scratch, seed)
        try:
            os.rename(scratch, directory)
        except OSError:  # another process built it first
            shutil.rmtree(scratch, ignore_errors=True)
    return directory


def build_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide random BertModel and its tokenizer to `directory` (no download)."""
    import torch
    from transformers import BertConfig, BertModel

    from unipgen.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(max_length=128)
    # BERT-style names for the frame tokens, so tools that skip [CLS]/[SEP] skip them too.
    tokenizer.cls_token, tokenizer.sep_token = "<bos>", "<eos>"
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=128, pad_token_id=0)
    BertModel(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@lru_cache(maxsize=2)
def _encoder(model: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = str(tiny_bert_dir()) if model == TINY_BERT else model
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def _embed(texts: Sequence[str], model: str, layer: int | None, batch_size: int) -> list[tuple[Any, list[int | None]]]:
    """Per text: its [tokens, dim] embeddings (padding dropped) and token ids (None for special tokens)."""
    import torch

    tokenizer, encoder = _encoder(model)
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer([t.strip() for t in texts[start:start + batch_size]], padding=True, truncation=True,
                          return_special_tokens_mask=True, return_tensors="pt")
        special = batch.pop("special_tokens_mask").bool()
        with torch.inference_mode():
            states = encoder(**batch, output_hidden_states=True).hidden_states
        hidden = states[-1 if layer is None else layer]
        for row, mask, ids, specials in zip(hidden, batch["attention_mask"].bool(), batch["input_ids"], special,
                                            strict=True):
            tokens = [None if s else int(t) for t, s in zip(ids[mask].tolist(), specials[mask].tolist(), strict=True)]
            out.append((row[mask].double().numpy(), tokens))
    return out


def _idf(tokens: list[list[int | None]]) -> dict[int | None, float]:
    """BERTScore's idf over the reference texts: log((M + 1) / (df + 1)), unseen ids log(M + 1)."""
    df: Counter[int | None] = Counter()
    for ids in tokens:
        df.update(set(ids))
    m = len(tokens)
    return {token: math.log((m + 1) / (count + 1)) for token, count in df.items()}


def bert_score(predictions: Sequence[str], references: References, model: str = TINY_BERT,
               layer: int | None = None, idf: bool = False, batch_size: int = 32) -> BertScore:
    """BERTScore (P, R, F1) of each prediction against its references with a transformers encoder.

    `model` is a Hub id or a local folder loadable by AutoModel/AutoTokenizer (offline: a local
    folder), or "tiny-random" for a tiny random BERT (tests; its numbers carry no meaning). `layer`
    indexes the encoder's hidden states (0 = embeddings, n = after layer n; None = last); the
    `bert-score` package's default for a model is its tuned layer, so pass that layer to compare.
    `idf` weights tokens by inverse document frequency over the references. As in `bert-score`,
    special tokens ([CLS], [SEP]) weigh 0 but other tokens may still match them. With several
    references a prediction gets the one with the best F1. No baseline rescaling.
    """
    if layer is not None and not isinstance(layer, int):
        raise InvalidInputError(f"layer must be an int or None, not {layer!r}")
    refs = _ref_lists(predictions, references)
    flat = [r for options in refs for r in options]
    pred_emb = _embed(list(predictions), model, layer, batch_size)
    ref_emb = _embed(flat, model, layer, batch_size)
    weights = _idf([ids for _, ids in ref_emb]) if idf else {}
    unseen = math.log(len(flat) + 1) if idf else 1.0

    def w(ids: list[int | None]) -> list[float]:
        return [0.0 if t is None else weights.get(t, unseen) for t in ids]

    per_pair, at = [], 0
    for (pred, pred_ids), options in zip(pred_emb, refs, strict=True):
        scores = [greedy_match(pred, ref, w(pred_ids), w(ref_ids)) for ref, ref_ids in ref_emb[at:at + len(options)]]
        at += len(options)
        per_pair.append(max(scores, key=lambda s: s[2]))
    n = len(per_pair)
    return BertScore(sum(p for p, _, _ in per_pair) / n, sum(r for _, r, _ in per_pair) / n,
                     sum(f for _, _, f in per_pair) / n, per_pair)


# -- labels and ratings (LaMP 1-3) ----------------------------------------------------------------


def _label_pairs(predictions: Sequence[Any], golds: Sequence[Any]) -> None:
    if len(golds) == 0:
        raise InvalidInputError("empty corpus: no gold labels")
    if len(predictions) != len(golds):
        raise InvalidInputError(f"length mismatch: {len(predictions)} predictions but {len(golds)} golds")


def accuracy(predictions: Sequence[Hashable | None], golds: Sequence[Hashable]) -> float:
    """Share of predictions equal to their gold label, in [0, 1]. None (unparsed answer) is wrong."""
    _label_pairs(predictions, golds)
    return sum(p is not None and p == g for p, g in zip(predictions, golds, strict=True)) / len(golds)


def macro_f1(predictions: Sequence[Hashable | None], golds: Sequence[Hashable],
             labels: Sequence[Hashable] | None = None) -> float:
    """Unweighted mean over labels of each label's F1 = 2TP / (2TP + FP + FN), in [0, 1].

    `labels` defaults to every label among golds and predictions (as scikit-learn); pass the
    task's label set to also count labels that never occur. A label with no TP scores 0 (also one
    with no gold and no prediction: scikit-learn's zero_division=0). None predictions are misses.
    """
    _label_pairs(predictions, golds)
    pairs = list(zip(predictions, golds, strict=True))
    if labels is None:
        labels = sorted({g for g in golds} | {p for p in predictions if p is not None}, key=repr)
    if len(labels) == 0:
        raise InvalidInputError("labels is empty")
    scores = []
    for label in labels:
        tp = sum(p == label and g == label for p, g in pairs)
        fp = sum(p == label and g != label for p, g in pairs)
        fn = sum(p != label and g == label for p, g in pairs)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def _errors(predictions: Sequence[float], golds: Sequence[float]) -> list[float]:
    _label_pairs(predictions, golds)
    errors = []
    for i, (p, g) in enumerate(zip(predictions, golds, strict=True)):
        if not isinstance(p, int | float) or not isinstance(g, int | float) or math.isnan(p) or math.isnan(g):
            raise InvalidInputError(f"rating {i} is not a number (prediction {p!r}, gold {g!r}); "
                                    "map unparsed answers to a rating first")
        errors.append(float(p) - float(g))
    return errors


def mae(predictions: Sequence[float], golds: Sequence[float]) -> float:
    """Mean absolute error, ≥ 0 in rating units (LaMP-3: stars 1-5, so at most 4; lower is better)."""
    errors = _errors(predictions, golds)
    return sum(abs(e) for e in errors) / len(errors)


def rmse(predictions: Sequence[float], golds: Sequence[float]) -> float:
    """Root mean squared error, ≥ MAE, in rating units; weighs large misses more (lower is better)."""
    errors = _errors(predictions, golds)
    return math.sqrt(sum(e * e for e in errors) / len(errors))
