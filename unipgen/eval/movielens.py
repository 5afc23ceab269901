"""MovieLens next-item ranking: unipgen's preference model against popularity (leave-last-out).

Protocol: each user's LAST rating (by timestamp, ties broken by file row) is held out; only
users whose held-out rating is ≥ 4 are evaluated. The user's preference is built from all their
earlier ratings (`rate` events, value = stars); every movie the user did not rate in that
training part is ranked (the held-out movie is among them). Metrics: NDCG@10 (1/log2(rank+1)
when rank ≤ 10, one relevant item) and HR@10, averaged over users; `run_movielens` adds NDCG@k
and HR@k for k in CURVE_KS through `unipgen.eval.ranking_metrics`. Ties in a score are broken
by catalog order (movies.csv row), as a stable sort would.

Item spaces: "content" = MiniLM (all-MiniLM-L6-v2) vectors of "Title (Year) — Genre, Genre";
"behavior" = `unipgen.core.collaborative.fit_item_factors` on ALL users' training ratings only
(never a held-out one); the model ranks in a blend of the two (concatenation, content scaled by
`content_blend`). Popularity = number of training ratings per movie. EASE, item-kNN and SASRec
(`unipgen.eval.recsys_baselines`) are fitted on the same training part, tuned on the same even
users and reported on the same odd users.

Tuning is honest: users with EVEN ids tune (coordinate ascent over half-lives, rating neutral,
short-term/negative weights, factor settings and the blend), users with ODD ids are reported.
The content-only and no-decay variants are tuned the same way on the even users.

`run_movielens` is `unipgen eval movielens` (any folder with ratings.csv and movies.csv);
`unipgen bench usermodel` (`unipgen.bench.usermodel`) calls `bench_ranking`.
Full data: ~2 min (+ ~80 s once to embed the titles with MiniLM, cached under the temp dir).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.core.preference import PreferenceConfig, PreferenceState, build, score_items, update
from unipgen.errors import InvalidInputError
from unipgen.eval.environment import machine, shown_data_path
from unipgen.eval.live import fit_live
from unipgen.eval.movielens_data import (
    Baseline,
    MovieLens,
    SpaceConfig,
    Spaces,
    Split,
    TextEncoder,
    default_data_dir,
    item_text,
    leave_last_out,
    load_movielens,
    metrics,
    ndcg_per_user,
    profile_text_encoder,
    rank_of_target,
    text_embeddings,
)
from unipgen.eval.recsys_baselines import fit_baselines

QUICK_USERS = 150  # per split with bench_ranking(quick=True), as `unipgen bench usermodel --quick`
#: run_movielens(quick=True): users per split and tuning rounds (~20 s once the titles are embedded).
QUICK_EVAL = {"users": 40, "rounds": 1}
#: The cut-offs of the report's NDCG@k / HR@k curves.
CURVE_KS = (1, 5, 10, 20, 50)
#: The reported variants: the tuned model, the baseline and the ablations (see `_report`).
VARIANTS = ("model", "live", "popularity", "no_decay", "content_only", "default_config", "behavior_only",
            "ease", "itemknn", "sasrec")


# ---------------------------------------------------------------- evaluation


def popularity(data: MovieLens, split: Split) -> np.ndarray:
    """Training ratings per movie."""
    return np.bincount(data.item[split.train], minlength=data.n_items).astype(np.float64)


def bootstrap_gain_ci(
    model_ranks: np.ndarray, base_ranks: np.ndarray, seed: int = 0
) -> list[float]:
    """95% paired-bootstrap interval of mean NDCG@10 (model − baseline) over users: with ~180
    users one hit at rank 1 moves NDCG by ~0.005, so the interval says how sure the gain is."""
    gain = ndcg_per_user(model_ranks) - ndcg_per_user(base_ranks)
    rng = np.random.default_rng(seed)
    means = gain[rng.integers(len(gain), size=(2000, len(gain)))].mean(axis=1)
    return [round(float(q), 4) for q in np.percentile(means, [2.5, 97.5])]


def user_events(data: MovieLens, start: int, end: int) -> list[tuple[int, str, float, float]]:
    """One user's training ratings as `build` events (item, "rate", stars, ts)."""
    rows = range(start, end)
    return [(int(data.item[i]), "rate", float(data.rating[i]), float(data.ts[i])) for i in rows]


@dataclass
class Tuned:
    """The best configuration found on the tuning users and its tuning NDCG@10."""

    config: PreferenceConfig
    space: SpaceConfig
    ndcg: float
    trials: int


class Evaluator:
    """Ranks held-out movies for a fixed set of users (indices into the split)."""

    def __init__(self, data: MovieLens, split: Split, users: np.ndarray) -> None:
        self.users = users
        self.events = [user_events(data, split.starts[j], split.ends[j]) for j in users]
        self.train_items = [data.item[split.starts[j] : split.ends[j]] for j in users]
        self.targets = split.target[users]

    def ranks(self, score: Callable[[int], np.ndarray], top: list[list[int]] | None = None) -> np.ndarray:
        """Rank of each user's target under `score(position)` → scores of every item. With `top`,
        each user's first `max(CURVE_KS)` unrated items (best first, ties in catalog order) are
        appended to it, for the ranking_metrics NDCG@k / HR@k curves."""
        ranks = []
        for n in range(len(self.users)):
            scores = score(n)
            ranks.append(rank_of_target(scores, self.train_items[n], int(self.targets[n])))
            if top is not None:
                masked = scores.astype(np.float64)  # a copy
                masked[self.train_items[n]] = -np.inf
                top.append(np.argsort(-masked, kind="stable")[: max(CURVE_KS)].tolist())
        return np.array(ranks)

    def preference_ranks(
        self, matrix: np.ndarray, config: PreferenceConfig, top: list[list[int]] | None = None
    ) -> np.ndarray:
        """Target ranks under `score_items` on states built from the training events."""

        def score(n: int) -> np.ndarray:
            return score_items(build(self.events[n], matrix, config), matrix, config)

        return self.ranks(score, top)

    def ndcg(self, spaces: Spaces, tuned: Tuned) -> float:
        """Mean NDCG@10 of a candidate configuration (what tuning maximises)."""
        return metrics(self.preference_ranks(spaces.matrix(tuned.space), tuned.config))[0]


# ---------------------------------------------------------------- tuning


#: Coordinate-ascent grid: each knob is tried with the others fixed, twice over.
CONFIG_GRID: dict[str, list[Any]] = {
    "rating_neutral": [0.0, 2.0, 2.5, 3.0, 3.5, 4.0],
    "long_half_life_days": [7.0, 30.0, 90.0, 365.0, 1825.0],
    "short_half_life_days": [0.005, 0.02, 0.1, 0.5, 2.0, 7.0],
    "short_term_weight": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0],
    "negative_weight": [0.0, 0.1, 0.3, 0.6],
}
SPACE_GRID: dict[str, list[Any]] = {
    "dim": [32, 64, 128, 256],
    "power": [0.0, 0.25, 0.5, 1.0],
    "implicit": [True, False],
    "content_blend": [0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
}
NO_DECAY_KNOBS = ("rating_neutral", "negative_weight")  # the others only matter with decay


def tune(
    evaluator: Evaluator,
    spaces: Spaces,
    start: Tuned,
    config_knobs: Sequence[str],
    space_knobs: Sequence[str],
    rounds: int = 2,
) -> Tuned:
    """Coordinate ascent on the tuning users' NDCG@10 over the named knobs."""
    best = start
    best.ndcg = evaluator.ndcg(spaces, best)
    for _ in range(rounds):
        for knob in [*config_knobs, *space_knobs]:
            for value in (CONFIG_GRID | SPACE_GRID)[knob]:
                trial = _with(best, knob, value)
                trial.ndcg = evaluator.ndcg(spaces, trial)
                best.trials += 1
                if trial.ndcg > best.ndcg + 1e-9:
                    best = replace(trial, trials=best.trials)
    return best


def _with(tuned: Tuned, knob: str, value: Any) -> Tuned:
    """`tuned` with one knob (a PreferenceConfig or SpaceConfig field) set to `value`."""
    if knob in CONFIG_GRID:
        return replace(tuned, config=replace(tuned.config, **{knob: value}))
    return replace(tuned, space=replace(tuned.space, **{knob: value}))


# ---------------------------------------------------------------- throughput


def update_throughput(
    data: MovieLens, split: Split, matrix: np.ndarray, config: PreferenceConfig
) -> float:
    """Incremental `update` events/s over every training rating, user by user in time order."""
    train = np.flatnonzero(split.train)
    items, stars, times = data.item[train], data.rating[train], data.ts[train].astype(float)
    users = data.user[train]
    vectors = np.asarray(matrix, dtype=np.float64)
    states: dict[int, PreferenceState] = {}
    started = time.perf_counter()
    for u, i, r, t in zip(users.tolist(), items.tolist(), stars.tolist(), times.tolist()):
        state = states.get(u) or states.setdefault(
            u, PreferenceState.empty(matrix.shape[1], config)
        )
        update(state, vectors[i], "rate", r, t, config)
    return len(train) / (time.perf_counter() - started)


# ---------------------------------------------------------------- the benchmark


def bench_ranking(
    data_dir: Path, quick: bool = False, text_encoder: TextEncoder | None = None
) -> dict[str, Any]:
    """Leave-last-out NDCG@10 / HR@10 of the preference model vs popularity (see module doc).

    Returns the test-user (odd id) metrics of the tuned model, popularity, the tuned no-decay
    and content-only variants, the tuning-user NDCG@10, the chosen configurations and the
    `update` throughput. `quick` evaluates 150 tuning and 150 test users and tunes one
    coordinate-ascent round instead of two.
    """
    return evaluate_ranking(data_dir, quick=quick, text_encoder=text_encoder)[0]


def evaluate_ranking(
    data_dir: Path,
    quick: bool = False,
    text_encoder: TextEncoder | None = None,
    users: int | None = None,
    rounds: int | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, list[list[int]]], np.ndarray]:
    """`bench_ranking`'s result, each variant's top-`max(CURVE_KS)` lists for the test users
    and their held-out items. `users` caps each split (default: all, or 150 with `quick`);
    `rounds`: coordinate-ascent rounds (default 2, 1 with `quick`)."""
    say = log or (lambda _message: None)
    started = time.perf_counter()
    data = load_movielens(Path(data_dir))
    split = leave_last_out(data)
    texts = [item_text(t, g) for t, g in zip(data.titles, data.genres)]
    say(f"{len(data.user)} ratings, {data.n_items} movies; embedding titles (cached after the first run)")
    spaces = Spaces(data, split, text_embeddings(texts, text_encoder))
    tune_users, test_users = _user_sets(split, quick, users)
    if len(tune_users) == 0 or len(test_users) == 0:
        raise InvalidInputError(f"{data_dir}: leave-last-out needs users with a last rating >= 4 among both even "
                                f"(tuning) and odd (test) userIds; found {len(tune_users)} and {len(test_users)}")
    tuning, test = Evaluator(data, split, tune_users), Evaluator(data, split, test_users)
    embed_s = time.perf_counter() - started

    all_knobs, space_knobs = list(CONFIG_GRID), list(SPACE_GRID)
    rounds = rounds if rounds is not None else 1 if quick else 2
    say(f"tuning on {len(tune_users)} users ({rounds} round(s)), testing on {len(test_users)}")
    start = Tuned(PreferenceConfig(), SpaceConfig(), 0.0, 0)
    model = tune(tuning, spaces, start, all_knobs, space_knobs, rounds)
    no_decay_start = Tuned(replace(model.config, decay=False), model.space, 0.0, 0)
    no_decay = tune(tuning, spaces, no_decay_start, NO_DECAY_KNOBS, space_knobs, rounds)
    content_start = Tuned(model.config, SpaceConfig(content_blend=None), 0.0, 0)
    content = tune(tuning, spaces, content_start, all_knobs, [], rounds)
    tune_s = time.perf_counter() - started - embed_s
    say("the live path: the product's store, fit and recommend with their default settings")
    live, live_timings = fit_live(data, split, spaces.content, tuning, test, log=say)
    say("fitting the baselines (EASE, item-kNN, SASRec) on the training part, tuned on the same users")
    baselines = {"live": live, **fit_baselines(data, split, tuning, test, quick=quick, log=say)}

    top: dict[str, list[list[int]]] = {}
    results = _report(test, spaces, popularity(data, split), model, no_decay, content, top, baselines)
    matrix = spaces.matrix(model.space)
    results |= {
        "update_events_per_s": round(update_throughput(data, split, matrix, model.config)),
        "update_dim": int(matrix.shape[1]),
        "live_timings": live_timings,
        "live_ratio_vs_ease": _ratio(results["live_ndcg_at_10"], results["ease_ndcg_at_10"]),
        "live_ratio_vs_sasrec": _ratio(results["live_ndcg_at_10"], results["sasrec_ndcg_at_10"]),
        "live_ratio_vs_model": _ratio(results["live_ndcg_at_10"], results["ndcg_at_10"]),
        "update_events_per_s_384d": round(
            update_throughput(data, split, spaces.content, model.config)
        ),
        "users_evaluated": len(test_users),
        "tuning_users": len(tune_users),
        "tuning_ndcg_at_10": round(model.ndcg, 4),
        "tuning_trials": model.trials + no_decay.trials + content.trials,
        "split": "tune on even userIds, report odd userIds (held-out rating >= 4 only)",
        "quick": quick,
        "subsampled_users": users if users is not None else QUICK_USERS if quick else None,
        "embed_and_load_s": round(embed_s, 1),
        "tune_s": round(tune_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    return results, top, test.targets


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def _user_sets(split: Split, quick: bool, cap: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split positions of evaluable users (held-out rating ≥ 4): even ids tune, odd ids test;
    `cap` (150 with `quick`) keeps that many of each, drawn with a fixed seed."""
    positive = split.target_rating >= 4
    even = np.flatnonzero(positive & (split.users % 2 == 0))
    odd = np.flatnonzero(positive & (split.users % 2 == 1))
    cap = cap if cap is not None else QUICK_USERS if quick else None
    if cap is not None:
        rng = np.random.default_rng(0)
        even, odd = (np.sort(rng.permutation(s)[:cap]) for s in (even, odd))
    return even, odd


def _report(
    test: Evaluator,
    spaces: Spaces,
    counts: np.ndarray,
    model: Tuned,
    no_decay: Tuned,
    content: Tuned,
    top: dict[str, list[list[int]]],
    baselines: dict[str, Baseline],
) -> dict[str, Any]:
    """Test-user metrics of every variant, rounded, with the chosen configurations; fills `top`
    with each variant's top lists (keys: VARIANTS). `baselines`: EASE, item-kNN and SASRec,
    already tuned, with their test users' scores."""
    for name in VARIANTS:
        top[name] = []
    ranks = {
        "": test.preference_ranks(spaces.matrix(model.space), model.config, top["model"]),
        "popularity_": test.ranks(lambda n: counts, top["popularity"]),
        "no_decay_": test.preference_ranks(spaces.matrix(no_decay.space), no_decay.config, top["no_decay"]),
        "content_only_": test.preference_ranks(spaces.matrix(content.space), content.config, top["content_only"]),
        # Untuned reference: the library's default PreferenceConfig on default 64-d factors.
        "default_config_": test.preference_ranks(
            spaces.matrix(SpaceConfig()), PreferenceConfig(), top["default_config"]
        ),
        # Ablation, not re-tuned: the tuned model without its content half.
        "behavior_only_": test.preference_ranks(
            spaces.matrix(replace(model.space, content_blend=0.0)), model.config, top["behavior_only"]
        ),
    }
    for name, baseline in baselines.items():
        ranks[f"{name}_"] = test.ranks(baseline.test_scores.__getitem__, top[name])
    results: dict[str, Any] = {}
    for prefix, r in ranks.items():
        ndcg, hr = metrics(r)
        results |= {f"{prefix}ndcg_at_10": round(ndcg, 4), f"{prefix}hr_at_10": round(hr, 4)}
    pop = results["popularity_ndcg_at_10"]
    return results | {
        "ndcg_ratio_vs_popularity": round(results["ndcg_at_10"] / pop, 2) if pop else None,
        "ndcg_gain_vs_popularity_ci95": bootstrap_gain_ci(ranks[""], ranks["popularity_"]),
        "config": model.config.to_dict(),
        "space": vars(model.space).copy(),
        "no_decay_config": no_decay.config.to_dict(),
        "no_decay_space": vars(no_decay.space).copy(),
        "content_only_config": content.config.to_dict(),
        **{f"ndcg_gain_vs_{name}_ci95": bootstrap_gain_ci(ranks[""], ranks[f"{name}_"]) for name in baselines},
        **{f"{name}_tuning_ndcg_at_10": b.tuning_ndcg for name, b in baselines.items()},
        "baselines": {name: {"params": b.params, "tuning_ndcg_at_10": b.tuning_ndcg, "seconds": b.seconds,
                             "trials": b.trials} for name, b in baselines.items()},
    }




# ---------------------------------------------------------------- the harness


def run_movielens(
    data: Path | str | None = None,
    *,
    quick: bool = False,
    out: Path | str | None = None,
    users: int | None = None,
    rounds: int | None = None,
    text_encoder: TextEncoder | None = None,
    profile: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the protocol on `data` (default: the shared movielens-latest-small) and, when `out` is
    given, write `movielens.json`, `.md`, `.html` and `movielens-at-k.png` into it.

    `quick`: 40 tuning and 40 test users (drawn with a fixed seed), one tuning round: a harness
    check whose NDCG@10 gain over popularity has a wide interval (`unipgen bench usermodel
    --quick` uses 150). `users` caps each split, `rounds` sets the tuning rounds (either
    overrides `quick`). `text_encoder`: texts → vectors for the content space (default MiniLM);
    `profile`: use that model profile's text encoder instead.
    `log`: called with progress lines. Returns `bench_ranking`'s keys plus `at_k` ({variant:
    {"ndcg": {k: v}, "hr": {k: v}}}, from `unipgen.eval.ranking_metrics`; k is a string in the
    JSON file), `settings`, `machine`, `seconds` and `report` (paths, when `out` is given).
    """
    from unipgen.eval import ranking_metrics as rm

    started = time.perf_counter()
    directory = Path(data) if data is not None else default_data_dir()
    if profile is not None and text_encoder is None:
        text_encoder = profile_text_encoder(profile)
    if quick:
        users = users if users is not None else QUICK_EVAL["users"]
        rounds = rounds if rounds is not None else QUICK_EVAL["rounds"]
    results, top, targets = evaluate_ranking(directory, quick, text_encoder, users, rounds, log)
    relevant = [{int(t)} for t in targets]
    at_k = {name: {"ndcg": {k: round(rm.ndcg_at_k(lists, relevant, k), 4) for k in CURVE_KS},
                   "hr": {k: round(rm.hit_rate_at_k(lists, relevant, k), 4) for k in CURVE_KS}}
            for name, lists in top.items()}
    encoder = "all-MiniLM-L6-v2" if text_encoder is None else getattr(text_encoder, "__qualname__", "custom")
    result = {"benchmark": "movielens", "protocol": "leave-last-out next-item ranking (odd userIds, last rating >= 4)",
              "settings": {"data": shown_data_path(directory), "quick": quick, "users_per_split": users, "rounds": rounds,
                           "text_encoder": encoder, "curve_ks": list(CURVE_KS)},
              **results, "at_k": at_k, "machine": machine("numpy"),
              "seconds": round(time.perf_counter() - started, 2)}
    if out is not None:
        result["report"] = write_movielens_report(Path(out), result)
    return result


def _baseline_setting(name: str, params: dict[str, Any]) -> str:
    """The tuned hyperparameter of a baseline, as the report shows it."""
    if name == "sasrec":
        return (f"best epoch {params['best_epoch']}, hidden {params['hidden']}, {params['blocks']} blocks, "
                f"last {params['max_len']} items")
    return ", ".join(f"{k} {v}" for k, v in params.items())


def write_movielens_report(out_dir: Path, result: dict[str, Any]) -> dict[str, str]:
    """`movielens.json`, `.md`, `.html` and the NDCG@k / HR@k bar plot `movielens-at-k.png`."""
    from unipgen.eval import report
    from unipgen.eval.report import BarPanel, Heading, Image, Paragraph, Table

    at_k, ks = result["at_k"], CURVE_KS
    shown = ("model", "live", "popularity", "ease", "itemknn", "sasrec", "content_only")
    panels = [BarPanel(f"{label}@k", [str(k) for k in ks],
                       {name.replace("_", " "): [at_k[name][key][k] for k in ks] for name in shown},
                       title=f"{label}@k on {result['users_evaluated']} test users")
              for key, label in (("ndcg", "NDCG"), ("hr", "HR"))]
    plot = report.bars_png(out_dir / "movielens-at-k.png", panels, title="MovieLens leave-last-out: model vs baselines")
    ci = result["ndcg_gain_vs_popularity_ci95"]
    rows = [[name.replace("_", " "), *(at_k[name]["ndcg"][k] for k in ks), *(at_k[name]["hr"][k] for k in ks)]
            for name in VARIANTS]
    settings, machine_info = result["settings"], result["machine"]
    blocks: list[Any] = [
        Paragraph(f"{settings['data']}: {result['users_evaluated']} test users (odd userIds), "
                  f"{result['tuning_users']} tuning users (even userIds), {result['tuning_trials']} tuning trials; "
                  f"text encoder {settings['text_encoder']}; {result['seconds']} s on {machine_info['cpu']} "
                  f"({machine_info['cores']} cores)."),
        Paragraph("Each user's last rating (>= 4 stars) is held out and every movie the user has not rated is "
                  "ranked. NDCG@k = 1/log2(rank+1) when the held-out movie is in the top k (else 0); HR@k = share "
                  "of users with it in the top k. Popularity ranks by training-rating count; 'content only' ranks "
                  "in the text encoder's title vectors; 'no decay' switches the preference model's time decay off; 'default "
                  "config' is the untuned library default; 'behavior only' drops the content half of the model. "
                  "EASE (Steck 2019, L2 weight tuned), item-kNN (cosine, k neighbours tuned) and SASRec (causal "
                  "self-attention over the user's last items, early-stopped) see the same training ratings and are "
                  "tuned on the same even-userId users."),
        Heading("Results"),
        Table(["variant", *(f"NDCG@{k}" for k in ks), *(f"HR@{k}" for k in ks)], rows, digits=4),
        Paragraph(f"Model / popularity NDCG@10: {result['ndcg_ratio_vs_popularity']}; 95% paired-bootstrap interval "
                  f"of the NDCG@10 gain over popularity: [{ci[0]}, {ci[1]}]. Tuning-user NDCG@10: "
                  f"{result['tuning_ndcg_at_10']}. Incremental update: {result['update_events_per_s']} events/s "
                  f"({result['update_dim']}-d)."),
        Image(plot.name, "NDCG@k and HR@k of the model and the baselines"),
        Heading("Baselines"),
        Table(["baseline", "tuned setting", "tuning NDCG@10", "test NDCG@10", "model - baseline NDCG@10 (95% CI)",
               "seconds"],
              [[name, _baseline_setting(name, b["params"]), b["tuning_ndcg_at_10"], result[f"{name}_ndcg_at_10"],
                str(result[f"ndcg_gain_vs_{name}_ci95"]), b["seconds"]]
               for name, b in result["baselines"].items()], digits=4),
        Heading("Chosen configuration"),
        Table(["setting", "value"], [[k, v] for k, v in {**result["config"], **result["space"]}.items()]),
    ]
    files = report.write_report(out_dir, "movielens", "MovieLens next-item ranking", blocks,
                                result | {"report": {"plot": str(plot), "json": str(out_dir / "movielens.json"),
                                                     "markdown": str(out_dir / "movielens.md"),
                                                     "html": str(out_dir / "movielens.html")}})
    return {**files.as_dict(), "plot": str(plot)}
