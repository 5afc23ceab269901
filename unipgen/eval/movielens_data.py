"""MovieLens data for the ranking harness: the ratings and the leave-last-out split, and the
item spaces ranked in (content vectors of titles, behavior factors, their blend).

`unipgen.eval.movielens` runs the protocol on these (its docstring says how); they live here so
each file stays readable in one sitting.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unipgen.core.collaborative import fit_item_factors
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.eval.environment import shared_data_dir
from unipgen.memory.loaders import movie_item, read_movielens

if TYPE_CHECKING:
    from unipgen.eval.movielens import Evaluator

TextEncoder = Callable[[list[str]], np.ndarray]
#: The cut-off of the protocol's NDCG@K and HR@K.
K = 10

def default_data_dir() -> Path:
    return shared_data_dir() / "movielens-latest-small"


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class MovieLens:
    """Ratings as parallel arrays sorted by (user, timestamp, file row), plus the catalog.

    `item` indexes `titles`/`genres` (movies.csv row order); `user` is the MovieLens userId.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    ts: np.ndarray
    titles: list[str]
    genres: list[str]

    @property
    def n_items(self) -> int:
        return len(self.titles)


def load_movielens(data_dir: Path) -> MovieLens:
    """Read ratings.csv and movies.csv; ratings of movies missing from movies.csv are dropped.

    A missing folder is NotFoundError; a folder without those files, or with other columns or
    unreadable values, is InvalidInputError; both name the path. tags.csv is not used.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise NotFoundError(f"MovieLens folder {data_dir} not found (pass data=, or set UNIPGEN_SHARED_DATA)")
    absent = [name for name in ("ratings.csv", "movies.csv") if not (data_dir / name).is_file()]
    if absent:
        raise InvalidInputError(f"{data_dir}: no {' or '.join(absent)}; expected the MovieLens layout "
                                "(ratings.csv, movies.csv, optionally tags.csv)")
    movies = read_movielens(data_dir, "movies.csv")
    ratings = read_movielens(data_dir, "ratings.csv")
    try:
        index = {int(m["movieId"]): i for i, m in enumerate(movies)}
        rows = [r for r in ratings if int(r["movieId"]) in index]
        user = np.array([int(r["userId"]) for r in rows], dtype=np.int64)
        ts = np.array([int(r["timestamp"]) for r in rows], dtype=np.int64)
        item = np.array([index[int(r["movieId"])] for r in rows], dtype=np.int64)
        rating = np.array([float(r["rating"]) for r in rows])
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{data_dir}: unreadable value in ratings.csv or movies.csv ({exc})") from None
    if not rows:
        raise InvalidInputError(f"{data_dir}: ratings.csv has no rating of a movie in movies.csv")
    order = np.lexsort((np.arange(len(rows)), ts, user))  # by user, time, then file row
    return MovieLens(
        user=user[order],
        item=item[order],
        rating=rating[order],
        ts=ts[order],
        titles=[m["title"] for m in movies],
        genres=[m["genres"] for m in movies],
    )


@dataclass(frozen=True)
class Split:
    """Leave-last-out: `train` masks the rating arrays; `users[j]` holds out `target[j]` with
    rating `target_rating[j]`; `starts[j]:ends[j]` is that user's training slice."""

    train: np.ndarray
    users: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    target: np.ndarray
    target_rating: np.ndarray


def leave_last_out(data: MovieLens) -> Split:
    """Hold out each user's last rating (arrays are already sorted by user, time, row)."""
    users, starts = np.unique(data.user, return_index=True)
    ends = np.append(starts[1:], len(data.user)) - 1  # the held-out row; training is before it
    train = np.ones(len(data.user), dtype=bool)
    train[ends] = False
    return Split(train, users, starts, ends, data.item[ends], data.rating[ends])


# ---------------------------------------------------------------- item spaces


def item_text(title: str, genres: str) -> str:
    """What MiniLM embeds for a movie: the same text the store's MovieLens loader writes."""
    return movie_item({"movieId": "0", "title": title, "genres": genres}).text


def minilm_encoder() -> TextEncoder:
    """unipgen's default text encoder (all-MiniLM-L6-v2, offline), on one CPU thread."""
    import torch

    from unipgen.core.encoders.text import SentenceTransformerEncoder

    torch.set_num_threads(1)  # 2 threads on 2 shared cores can be far slower
    return SentenceTransformerEncoder(batch_size=128).encode


def profile_text_encoder(profile: str) -> TextEncoder:
    """The text encoder a model profile names, as texts → vectors; its name (the embedding
    cache's key) is the profile entry's type and ref, so two models never share a cache."""
    from unipgen.core.encoders import load_encoder
    from unipgen.schema.profiles import load_profile

    spec = load_profile(profile).encoders["text"]
    encoder = load_encoder(spec)

    def encode(texts: list[str]) -> np.ndarray:
        return encoder.encode(texts)

    encode.__qualname__ = f"{spec.type}:{spec.ref}"
    return encode


def text_embeddings(texts: list[str], text_encoder: TextEncoder | None = None) -> np.ndarray:
    """L2-normalised float32 embeddings of `texts`, cached under the temp dir by a hash of the
    texts and the encoder (MiniLM by default: ~70 s for MovieLens' 9.7k titles on one core)."""
    name = "minilm" if text_encoder is None else getattr(text_encoder, "__qualname__", "custom")
    digest = hashlib.sha256("\n".join([name, *texts]).encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "unipgen-bench-cache" / f"items-{digest}.npy"
    if path.exists():
        return np.load(path)
    vectors = np.asarray((text_encoder or minilm_encoder())(texts), dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


@dataclass(frozen=True)
class SpaceConfig:
    """How the ranking space is made: behavior factors (`dim`, `power` = singular value power,
    `implicit` = weight 1 per rating instead of the stars) blended with content vectors scaled
    by `content_blend` (0 = behavior only; None = content only)."""

    dim: int = 64
    power: float = 0.5
    implicit: bool = True
    content_blend: float | None = 0.0


class Spaces:
    """Builds (and memoises) item matrices for `SpaceConfig`s from training ratings only."""

    def __init__(self, data: MovieLens, split: Split, content: np.ndarray) -> None:
        self.data, self.split, self.content = data, split, content
        self._factors: dict[tuple[int, float, bool], np.ndarray] = {}
        self._matrices: dict[SpaceConfig, np.ndarray] = {}

    def factors(self, dim: int, power: float, implicit: bool) -> np.ndarray:
        """Behavior factors fit on every user's training ratings (held-out ones never seen)."""
        key = (dim, power, implicit)
        if key not in self._factors:
            d, train = self.data, self.split.train
            weights = np.ones(train.sum()) if implicit else d.rating[train]
            self._factors[key] = fit_item_factors(
                d.user[train],
                d.item[train],
                weights,
                d.n_items,
                dim=dim,
                singular_value_power=power,
            )
        return self._factors[key]

    def matrix(self, space: SpaceConfig) -> np.ndarray:
        """The item matrix (n_items, dim) the preference model ranks in (memoised)."""
        if space not in self._matrices:
            self._matrices[space] = self._blend(space)
        return self._matrices[space]

    def _blend(self, space: SpaceConfig) -> np.ndarray:
        """Behavior factors, content vectors, or both side by side."""
        if space.content_blend is None:
            return self.content
        factors = self.factors(space.dim, space.power, space.implicit)
        if space.content_blend == 0:
            return factors
        # Put the behavior vectors on the content vectors' unit scale before mixing.
        scale = np.linalg.norm(factors, axis=1)
        factors = factors / scale[scale > 0].mean()
        return np.hstack([factors, space.content_blend * self.content]).astype(np.float32)


# ---------------------------------------------------------------- the protocol's metrics


def rank_of_target(scores: np.ndarray, train_items: np.ndarray, target: int) -> int:
    """1-based rank of `target` among the items not in `train_items` (ties: catalog order)."""
    scores = scores.copy()
    scores[train_items] = -np.inf
    above = scores > scores[target]
    tied_before = scores[:target] == scores[target]
    return int(above.sum() + tied_before.sum()) + 1


def ndcg_per_user(ranks: np.ndarray) -> np.ndarray:
    """NDCG@10 of each user's single relevant item: 1/log2(rank+1) if rank ≤ 10, else 0."""
    r = np.asarray(ranks, dtype=np.float64)
    return np.where(r <= K, 1.0 / np.log2(r + 1), 0.0)


def metrics(ranks: np.ndarray) -> tuple[float, float]:
    """(NDCG@10, HR@10) averaged over users, given each one's rank of the held-out movie."""
    return float(ndcg_per_user(ranks).mean()), float(np.mean(np.asarray(ranks) <= K))


@dataclass
class Baseline:
    """A tuned baseline: scores of the test users (rows in Evaluator order), its chosen
    hyperparameters and its tuning-user NDCG@10."""

    name: str
    test_scores: np.ndarray
    params: dict[str, Any]
    tuning_ndcg: float
    seconds: float = 0.0
    trials: list[dict[str, Any]] = field(default_factory=list)


def evaluator_ndcg(evaluator: Evaluator, scores: np.ndarray) -> float:
    """Mean NDCG@10 of `scores` (one row per evaluator user) under the harness's ranking."""
    return metrics(evaluator.ranks(lambda n: scores[n]))[0]
