"""`unipgen eval simulator`: the user simulator against real held-out choices on MovieLens.

Protocol. Ratings are sorted by (user, time, file row). Each user's LATER ratings, the last
`HELD_OUT` share of them (at least 2, leaving at least 1 to train on), are held out; every
user's earlier ratings go into a fresh embedded store through the live path
(`unipgen.eval.live.live_store`, then `UserModel.fit` with the product's default `FitConfig`).
For each user, the pairs of held-out ratings with different values (up to `MAX_PAIRS` per user,
drawn with a fixed seed) are the choices to predict: the higher-rated movie is the one chosen.

Three judges, in the same run, on the same pairs:

* **simulator**: `unipgen.core.simulator.Simulator.judge_pairs`, the product's simulator (the
  user's taste in the fitted behavior space, as recommendations rank);
* **popularity**: the movie with more training ratings;
* **random**: a fair coin (fixed seed).

Accuracy is the share of pairs where the judge prefers the higher-rated movie; a tie (equal
popularity, an undecided simulator) counts one half. The 95% intervals are bootstrap intervals
over users (a user's pairs are resampled together, `BOOTSTRAP` draws), and the differences
(simulator - popularity, simulator - random) are paired: computed on the same draws.
Nothing is tuned: every setting is the product's default, and the held-out ratings are never
in the store.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.errors import InvalidInputError
from unipgen.eval.environment import machine, shown_data_path
from unipgen.eval.live import TENANT, item_key, live_store
from unipgen.eval.movielens_data import (
    MovieLens,
    TextEncoder,
    default_data_dir,
    item_text,
    load_movielens,
    profile_text_encoder,
    text_embeddings,
)

#: Share of each user's ratings held out (their latest).
HELD_OUT = 0.2
#: Most held-out pairs per user (heavy raters would otherwise outweigh everyone else).
MAX_PAIRS = 20
#: Bootstrap draws of the intervals.
BOOTSTRAP = 2000
#: Users evaluated with `quick` (drawn with a fixed seed).
QUICK_USERS = 40
JUDGES = ("simulator", "popularity", "random")


def held_out_split(data: MovieLens, share: float = HELD_OUT) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """The training mask over the rating rows, and per user (MovieLens userId) the rows of
    their held-out later ratings. Users with fewer than 3 ratings keep them all for training."""
    train = np.ones(len(data.user), dtype=bool)
    held: list[tuple[int, np.ndarray]] = []
    users, starts, counts = np.unique(data.user, return_index=True, return_counts=True)
    for user, start, count in zip(users.tolist(), starts.tolist(), counts.tolist()):
        n = max(2, round(share * count))
        if count - n < 1:
            continue
        rows = np.arange(start + count - n, start + count)
        train[rows] = False
        held.append((int(user), rows))
    return train, held


def user_pairs(data: MovieLens, rows: np.ndarray, rng: np.random.Generator, cap: int = MAX_PAIRS
               ) -> list[tuple[int, int, float]]:
    """Pairs (higher-rated, lower-rated, star difference) of item indices among `rows`, ratings
    different; at most `cap`, drawn at random. A movie rated twice counts with its later rating."""
    latest = {int(data.item[r]): float(data.rating[r]) for r in rows.tolist()}
    items = sorted(latest)
    pairs = [(a, b, latest[a] - latest[b]) if latest[a] > latest[b] else (b, a, latest[b] - latest[a])
             for i, a in enumerate(items) for b in items[i + 1:] if latest[a] != latest[b]]
    if len(pairs) > cap:
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), cap, replace=False).tolist())]
    return pairs


def judge_all(model: Any, data: MovieLens, pairs: dict[int, list[tuple[int, int, float]]], train: np.ndarray,
              seed: int = 0) -> dict[str, dict[int, np.ndarray]]:
    """Per judge, per user: 1 for each of their pairs it gets right, 0 wrong, 0.5 a tie."""
    from unipgen.core.simulator import Simulator

    simulator = Simulator(model)
    counts = np.bincount(data.item[train], minlength=data.n_items)
    coin = np.random.default_rng(seed)
    right: dict[str, dict[int, np.ndarray]] = {name: {} for name in JUDGES}
    for user, chosen in pairs.items():
        keyed = [(item_key(a), item_key(b)) for a, b, _ in chosen]
        judged = simulator.judge_pairs(TENANT, str(user), keyed)
        right["simulator"][user] = np.array([0.5 if not j.decided else float(j.preferred.key == a)
                                             for j, (a, _) in zip(judged, keyed)])
        right["popularity"][user] = np.array([np.sign(counts[a] - counts[b]) * 0.5 + 0.5 for a, b, _ in chosen])
        right["random"][user] = coin.integers(0, 2, len(chosen)).astype(np.float64)
    return right


def bootstrap(right: dict[str, np.ndarray], sizes: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Accuracy of each judge with its 95% bootstrap interval over users, and the paired
    intervals of simulator - popularity and simulator - random (the same draws for all)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(len(sizes), size=(BOOTSTRAP, len(sizes)))
    totals = sizes[draws].sum(axis=1)
    drawn = {name: values[draws].sum(axis=1) / totals for name, values in right.items()}

    def interval(values: np.ndarray) -> list[float]:
        return [round(float(q), 4) for q in np.percentile(values, [2.5, 97.5])]

    out: dict[str, Any] = {}
    for name, values in right.items():
        out[name] = {"accuracy": round(float(values.sum() / sizes.sum()), 4), "ci95": interval(drawn[name])}
    for other in ("popularity", "random"):
        gain = drawn["simulator"] - drawn[other]
        out[f"simulator_minus_{other}"] = {
            "difference": round(out["simulator"]["accuracy"] - out[other]["accuracy"], 4), "ci95": interval(gain)}
    return out


def run_simulator(
    data: Path | str | None = None,
    *,
    quick: bool = False,
    out: Path | str | None = None,
    users: int | None = None,
    text_encoder: TextEncoder | None = None,
    profile: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol on `data` (default: the shared movielens-latest-small); with `out`, write
    `simulator.json`, `.md` and `.html` there. `quick` (or `users`): that many users, drawn with
    `seed`. `text_encoder` / `profile`: the items' text vectors (default MiniLM, cached)."""
    say = log or (lambda _line: None)
    started = time.perf_counter()
    directory = Path(data) if data is not None else default_data_dir()
    movies = load_movielens(directory)
    if profile is not None and text_encoder is None:
        text_encoder = profile_text_encoder(profile)
    train, held = held_out_split(movies)
    rng = np.random.default_rng(seed)
    pairs = {user: found for user, rows in held if (found := user_pairs(movies, rows, rng))}
    cap = users if users is not None else QUICK_USERS if quick else None
    if cap is not None and len(pairs) > cap:
        pairs = {user: pairs[user] for user in sorted(rng.choice(sorted(pairs), cap, replace=False).tolist())}
    if not pairs:
        raise InvalidInputError(f"{directory}: no user has two later ratings with different values to compare")
    content = text_embeddings([item_text(t, g) for t, g in zip(movies.titles, movies.genres)], text_encoder)
    result = _measure(movies, train, pairs, content, seed, say)
    encoder = "all-MiniLM-L6-v2" if text_encoder is None else getattr(text_encoder, "__qualname__", "custom")
    result = {"benchmark": "simulator",
              "protocol": "pairs of each user's later ratings (last 20%) with different values: does the judge "
                          "prefer the higher-rated movie",
              "settings": {"data": shown_data_path(directory), "quick": quick, "users": cap, "held_out": HELD_OUT,
                           "max_pairs_per_user": MAX_PAIRS, "bootstrap": BOOTSTRAP, "seed": seed,
                           "text_encoder": encoder},
              **result, "machine": machine("numpy", "sqlalchemy"), "seconds": round(time.perf_counter() - started, 2)}
    if out is not None:
        result["report"] = write_simulator_report(Path(out), result)
    return result


def _measure(movies: MovieLens, train: np.ndarray, pairs: dict[int, list[tuple[int, int, float]]], content: np.ndarray,
             seed: int, say: Callable[[str], None]) -> dict[str, Any]:
    """The live store, its fit, every judge on every pair, and the figures with their intervals."""
    with tempfile.TemporaryDirectory(prefix="unipgen-simulator-") as home:
        begun = time.perf_counter()
        model: Any = live_store(Path(home), movies, train, content)
        loaded = time.perf_counter()
        fit = model.fit(TENANT)
        fitted = time.perf_counter()
        say(f"live store: {int(train.sum())} training ratings loaded in {loaded - begun:.1f} s, fitted in "
            f"{fitted - loaded:.1f} s; judging {sum(map(len, pairs.values()))} pairs of {len(pairs)} users")
        right = judge_all(model, movies, pairs, train, seed)
        judged = time.perf_counter()
        model.store.close()
    order = sorted(pairs)
    sizes = np.array([len(pairs[user]) for user in order], dtype=np.float64)
    figures = bootstrap({name: np.array([right[name][user].sum() for user in order]) for name in JUDGES}, sizes, seed)
    gap = _by_gap(pairs, right)
    return {"users_evaluated": len(order), "pairs": int(sizes.sum()), "training_ratings": int(train.sum()),
            **figures, "by_rating_gap": gap,
            "target_met": figures["simulator_minus_popularity"]["ci95"][0] > 0,
            "fit": {"generation": fit.generation, "factor_dim": fit.stats["factor_dim"], "dim": fit.stats["dim"]},
            "timings": {"load_s": round(loaded - begun, 1), "fit_s": round(fitted - loaded, 1),
                        "judge_ms_per_user": round(1000 * (judged - fitted) / len(order), 1)}}


def _by_gap(pairs: dict[int, list[tuple[int, int, float]]], right: dict[str, dict[int, np.ndarray]]
            ) -> dict[str, dict[str, float | None]]:
    """Each judge's accuracy on pairs under 2 stars apart and 2 or more apart (the clearer choices)."""
    gaps = np.concatenate([[gap for _, _, gap in pairs[user]] for user in sorted(pairs)])
    out: dict[str, dict[str, float | None]] = {}
    for label, mask in (("under_2_stars", gaps < 2), ("2_stars_or_more", gaps >= 2)):
        out[label] = {"pairs": int(mask.sum()), **{
            name: round(float(np.concatenate([right[name][u] for u in sorted(pairs)])[mask].mean()), 4)
            if mask.any() else None for name in JUDGES}}
    return out


def write_simulator_report(out_dir: Path, result: dict[str, Any]) -> dict[str, str]:
    """`simulator.json`, `.md` and `.html`: the accuracies, intervals and settings."""
    from unipgen.eval import report
    from unipgen.eval.report import Heading, Paragraph, Table

    settings, info = result["settings"], result["machine"]
    rows = [[name, result[name]["accuracy"], str(result[name]["ci95"])] for name in JUDGES]
    rows += [[f"simulator - {other}", result[f"simulator_minus_{other}"]["difference"],
              str(result[f"simulator_minus_{other}"]["ci95"])] for other in ("popularity", "random")]
    blocks: list[Any] = [
        Paragraph(f"{settings['data']}: {result['users_evaluated']} users, {result['pairs']} pairs of their later "
                  f"ratings (the last {settings['held_out']:.0%} of each user's, at most "
                  f"{settings['max_pairs_per_user']} pairs each), {result['training_ratings']} earlier ratings in "
                  f"the store; text encoder {settings['text_encoder']}; {result['seconds']} s on {info['cpu']} "
                  f"({info['cores']} cores)."),
        Paragraph("Accuracy = share of pairs where the judge prefers the higher-rated movie (ties count half). "
                  "Simulator: `unipgen simulate`'s judgement (the user's taste in the fitted behavior space, "
                  "product defaults); popularity: more training ratings; random: a fair coin. 95% intervals: "
                  f"bootstrap over users ({settings['bootstrap']} draws), paired for the differences."),
        Heading("Results"),
        Table(["judge", "accuracy", "95% interval"], rows, digits=4),
        Heading("By how far apart the two ratings are"),
        Table(["stars apart", "pairs", *JUDGES],
              [[label.replace("_", " "), row["pairs"], *(row[name] for name in JUDGES)]
               for label, row in result["by_rating_gap"].items()], digits=4),
        Paragraph(f"Target (simulator above popularity, interval of the difference above 0): "
                  f"{'met' if result['target_met'] else 'not met'}."),
    ]
    files = report.write_report(out_dir, "simulator", "The user simulator on MovieLens", blocks,
                                result | {"report": {"json": str(out_dir / "simulator.json"),
                                                     "markdown": str(out_dir / "simulator.md"),
                                                     "html": str(out_dir / "simulator.html")}})
    return files.as_dict()


__all__ = ["HELD_OUT", "JUDGES", "MAX_PAIRS", "held_out_split", "judge_all", "run_simulator", "user_pairs",
           "write_simulator_report"]
