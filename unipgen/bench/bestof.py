"""`unipgen bench bestof`: how much does best-of-8 raise the user model's score of the kept output?

For several MovieLens-sample users (each with a voice recording attached: a LibriSpeech speaker
from ../shared/data when there, else the persona sample's) and a few prompts per modality, one
request with ``best_of = 8`` runs through the inline generator, exactly as `unipgen generate
--best-of 8` does. Its kept output's meta carries every candidate's score; candidate 0 (the
request's own seed) is what a plain request gives, so per (user, prompt):

* ``single``: the score of the first seed's candidate (what ``best_of = 1`` keeps);
* ``kept``: the score of the kept candidate (the highest of the 8);
* ``gain`` = kept - single, with a 95% bootstrap interval of its mean, resampling users (a
  user's prompts are not independent of each other).

The score is the user model's own (`unipgen.core.scoring`), so the gain says how well the choice
works by that yardstick, not whether people prefer the outputs. On the ``tiny`` profile every
generator and the CLIP/CLAP encoders have random weights: each modality's `score_kind` (and the
result's `note`) then says the figures are a mechanical check (they show the selection runs and
how far apart random candidates score), not evidence of better outputs.

    unipgen bench bestof [--quick] [--profile tiny]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.eval.environment import machine, shared_data_dir, shown_data_path
from unipgen.tiny import MEASURE, MECHANICAL, score_kind

N = 8
#: modality → prompts (the first `prompts` of each are used).
PROMPTS = {
    "text": ["Recommend me a film for tonight", "Write a short note about my favourite kind of film"],
    "image": ["a poster for my movie night", "a photo of a cinema at dusk"],
    "video": ["a short clip of a film reel spinning", "a video of city lights at night"],
    "audio": ["music for my evening", "a soundtrack for a film I would like"],
    "speech": ["Good evening, here is my pick for tonight.", "Tonight I would watch something new."],
    "3d": ["a 3d model of a film camera", "a 3d model of a popcorn bucket"],
}
SAMPLE = Path(__file__).resolve().parents[1] / "data" / "movielens-sample"
PERSONA_VOICES = Path(__file__).resolve().parents[1] / "data" / "persona-sample" / "voice"
MECHANICAL_NOTE = (f"{MECHANICAL}: the generator or the scoring encoder has random weights, so these scores show "
                   "that the selection runs and how far apart random candidates score, not that the kept outputs "
                   "are better")
MEASURE_NOTE = "scores by the profile's encoders (the user model's own yardstick, not people's judgement)"


def run(quick: bool = False, profile: str = "tiny", users: int | None = None, prompts: int | None = None,
        modalities: list[str] | None = None, best_of: int = N, seed: int = 0, resamples: int = 10_000) -> dict[str, Any]:
    """Best-of-`best_of` vs a single sample per modality; quick: 2 users, 1 prompt each."""
    import torch

    from unipgen.core.usermodel import UserModel
    from unipgen.memory import MemoryStore
    from unipgen.memory.loaders import load_movielens
    from unipgen.orchestrator import InlineGenerator
    from unipgen.settings import Settings

    torch.set_num_threads(1)
    users, prompts = users or (2 if quick else 6), prompts or (1 if quick else 2)
    with tempfile.TemporaryDirectory(prefix="bestof-bench-") as home, \
            MemoryStore.open(Settings(home=Path(home) / "home")) as store:
        load_movielens(store, "ml", SAMPLE, users=users)
        model = UserModel(store, profile, cache_dir=Path(home) / "cache")
        model.embed_missing("ml")
        people = store.users.list_users("ml")
        voices = _attach_voices(model, people)
        generator = InlineGenerator(model)
        wanted = modalities or [m for m in PROMPTS if m in model.profile.backends]
        per_modality = {modality: _modality(generator, modality, people, PROMPTS[modality][:prompts], best_of, seed,
                                            resamples) for modality in wanted}
    mechanical = any(entry.get("score_kind") == MECHANICAL for entry in per_modality.values())
    return {"best_of": best_of, "profile": profile, "users": len(people), "prompts_per_modality": prompts,
            "note": MECHANICAL_NOTE if mechanical else MEASURE_NOTE,
            "modalities": per_modality, "voices": voices,
            "settings": {"seed": seed, "resamples": resamples, "quick": quick},
            "machine": machine("torch", "transformers", "diffusers")}


def _attach_voices(model: Any, users: list[str]) -> list[str]:
    """One recording per user: LibriSpeech speakers (one each) where there, else the persona's, in turn."""
    root = shared_data_dir() / "librispeech-test-other-mini"
    speakers = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    files = [min(s.glob("*.flac")) for s in speakers if any(s.glob("*.flac"))] or sorted(PERSONA_VOICES.glob("*.flac"))
    chosen = [files[index % len(files)] for index in range(len(users))]
    for user, path in zip(users, chosen):
        model.add_voice("ml", user, "greeting", path.read_bytes(), consent=True)
    return [shown_data_path(path) for path in chosen]


def _modality(generator: Any, modality: str, users: list[str], prompts: list[str], best_of: int, seed: int,
              resamples: int) -> dict[str, Any]:
    from unipgen.schema.generation import GenerationOptions

    rows, started = [], time.perf_counter()
    options = GenerationOptions(seed=seed, best_of=best_of, max_new_tokens=16)
    for user in users:
        for prompt in prompts:
            [kept, *_] = generator.generate("ml", user, modality, prompt, options)
            meta = generator.model.store.artifacts.artifact("ml", kept.key).meta
            rows.append(_row(meta["best_of"], user, prompt) | {"kind": meta.get("score_kinds", {}).get("best_of")})
    # A gain is a mechanical check when the scores are (random encoder) or the candidates are noise (random generator).
    kinds = {row["kind"] for row in rows if row["kind"]}
    kind = score_kind(generator.backend(modality)) if kinds <= {MEASURE} else MECHANICAL
    return _summary(rows, resamples, seed) | {"seconds_per_request": round((time.perf_counter() - started) / len(rows), 2),
                                              "score_kind": kind, "rows": rows}


def _row(meta: dict[str, Any], user: str, prompt: str) -> dict[str, Any]:
    """One request: the first seed's score, the kept one's, and what they were scored against."""
    scores = [s["score"] for s in meta.get("scores", [])]
    scored = meta.get("scored", False) and scores and scores[0] is not None and meta["score"] is not None
    return {"user": user, "prompt": prompt, "scored": bool(scored), "space": meta["space"],
            "against": meta["against"], "distinct": meta.get("distinct"),
            "single": scores[0] if scored else None, "kept": meta.get("score") if scored else None,
            "candidates_mean": float(np.mean([s for s in scores if s is not None])) if scored else None}


def _summary(rows: list[dict[str, Any]], resamples: int, seed: int) -> dict[str, Any]:
    scored = [row for row in rows if row["scored"]]  # a first candidate with no score (empty text) is left out
    if not scored:
        return {"requests": len(rows), "scored_requests": 0, "why_not": rows[0]["against"] if rows else "no requests"}
    single, kept = (np.array([row[key] for row in scored]) for key in ("single", "kept"))
    return {"requests": len(rows), "scored_requests": len(scored), "space": scored[0]["space"],
            "single_mean": round(float(single.mean()), 4), "kept_mean": round(float(kept.mean()), 4),
            "candidates_mean": round(float(np.mean([row["candidates_mean"] for row in scored])), 4),
            "gain": round(float((kept - single).mean()), 4),
            "gain_ci95": bootstrap_by_user(scored, resamples, seed),
            "distinct_candidates_mean": round(float(np.mean([row["distinct"] for row in scored])), 2)}


def bootstrap_by_user(rows: list[dict[str, Any]], resamples: int = 10_000, seed: int = 0) -> list[float]:
    """95% interval of the mean gain (kept - single), resampling users with all their prompts."""
    by_user: dict[str, list[float]] = {}
    for row in rows:
        by_user.setdefault(row["user"], []).append(row["kept"] - row["single"])
    sums = np.array([sum(gains) for gains in by_user.values()])
    counts = np.array([len(gains) for gains in by_user.values()])
    picks = np.random.default_rng(seed).integers(len(sums), size=(resamples, len(sums)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    return [round(float(q), 4) for q in np.percentile(means, [2.5, 97.5])]

