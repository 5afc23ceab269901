"""The user simulator on a tiny real store: judgements with reasons, typed refusals that change
nothing, synthetic DPO preferences, and what the user would write through the generation path."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from unipgen.core.simulator import Simulator, is_synthetic, synthetic_feedback
from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, NotFoundError, UnsupportedMediaError
from unipgen.memory import MemoryStore
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.simulator import SIMULATOR_SOURCE, PairwiseJudgement
from unipgen.settings import Settings

GENRES = {"war": ["tanks", "soldiers", "battle", "trenches"], "cook": ["pasta", "bread", "soup", "cake"],
          "space": ["rockets", "planets", "astronauts", "stars"]}
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
PROMPT = "Describe the film you would watch tonight"


@pytest.fixture(autouse=True)
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def model(tmp_path: Path) -> Iterator[UserModel]:
    """12 users who each rate three films of one genre 5 stars (u0: war films), and one note of u0."""
    with MemoryStore.open(Settings(home=tmp_path / "home")) as store:
        store.users.create_tenant("t")
        model = UserModel(store, "tiny", cache_dir=tmp_path / "cache")
        model.add_items("t", [{"key": f"{genre}{n}", "text": f"a film about {word} and more {word}"}
                              for genre, words in GENRES.items() for n, word in enumerate(words)])
        events = []
        for u in range(12):
            genre = list(GENRES)[u % 3]
            events += [{"user": f"u{u}", "type": "rate", "item": f"{genre}{n}", "value": 5.0,
                        "ts": T0 + timedelta(hours=u * 10 + n)} for n in range(3) if (u + n) % 4 != 3]
        store.events.ingest_events("t", events, create_users=True)
        model.add_documents("t", "u0", [{"key": "note", "text": "I watch war films about tanks every weekend."}])
        yield model


def state(store: MemoryStore) -> tuple:
    """What a refused call must leave as it was."""
    return (store.users.list_users("t"), [store.events.events("t", f"u{u}") for u in range(3)],
            store.events.feedback("t", "u0"), [a.key for a in store.artifacts.artifacts("t", "u0")],
            store.fits.fits("t"))


def test_the_user_prefers_an_unseen_film_like_the_ones_they_liked(model: UserModel) -> None:
    model.fit("t", {"dim": 4})
    judged = Simulator(model).judge("t", "u0", "cook3", "war3")
    assert isinstance(judged, PairwiseJudgement) and judged.space == "behavior" and judged.fit_generation == 1
    assert judged.decided and judged.preferred.key == "war3" and judged.rejected.key == "cook3"
    assert judged.preferred.kind == "item" and judged.preferred.text == "a film about trenches and more trenches"
    assert judged.margin == pytest.approx(judged.preferred.score - judged.rejected.score, abs=1e-5)
    assert judged.margin > 0 and 0.5 < judged.probability <= 1.0
    assert judged.reasons and {r.item for r in judged.reasons} <= {"war0", "war1", "war2"}
    assert judged.reasons[0].text.startswith("a film about") and judged.reasons[0].value == 5.0
    # u0 has three events: the reasons are all of them, and their shares sum to the margin
    assert sum(r.contribution for r in judged.reasons) == pytest.approx(judged.margin, rel=1e-3)
    again = Simulator(model).judge("t", "u0", "war3", "cook3")
    assert again.preferred.key == "war3" and again.margin == judged.margin  # the order given does not matter


def test_before_a_fit_the_text_space_judges_and_a_user_without_events_cannot_tell(model: UserModel) -> None:
    simulator = Simulator(model)
    [liked, other] = simulator.judge_pairs("t", "u0", [("cook0", "war0"), ("space1", "cook1")])
    assert liked.space == "text" and liked.fit_generation is None
    assert liked.preferred.key == "war0"  # a film u0 rated 5 stars, against one they did not
    assert other.decided and {other.preferred.key, other.rejected.key} == {"space1", "cook1"}
    model.store.users.create_users("t", ["newcomer"])
    blank = simulator.judge("t", "newcomer", "war3", "cook3")
    assert not blank.decided and blank.probability == 0.5 and blank.margin == 0 and blank.reasons == []
    assert blank.preferred.key == "war3"  # undecided: the first given


@pytest.mark.parametrize("user, pair, error, message", [
    ("ghost", ("war3", "cook3"), NotFoundError, "unknown user 'ghost'"),
    ("u0", ("war3", "nope"), NotFoundError, "unknown candidate 'nope'"),
    ("u0", ("war3", "war3"), InvalidInputError, "the two candidates are the same"),
])
def test_bad_input_is_a_typed_error_and_changes_nothing(model: UserModel, user: str, pair: tuple[str, str],
                                                        error: type, message: str) -> None:
    model.fit("t", {"dim": 4})
    before = state(model.store)
    with pytest.raises(error, match=message):
        Simulator(model).judge("t", user, *pair)
    with pytest.raises(error, match=message):
        Simulator(model).record_preferences("t", user, [pair])
    assert state(model.store) == before


def test_synthetic_preferences_over_outputs_feed_dpo_and_the_simulator_writes_with_the_adapter(
        model: UserModel) -> None:
    from unipgen.orchestrator import InlineGenerator, train
    from unipgen.orchestrator.training import preference_pairs

    model.fit("t", {"dim": 4})
    generator = InlineGenerator(model)
    outputs = generator.generate("t", "u0", "text", PROMPT, GenerationOptions(num_outputs=3, max_new_tokens=6))
    keys = [o.key for o in outputs]
    store = model.store
    store.artifacts.add_artifact("t", "picture", kind="output", media_type="image/png", data=b"png", user="u0",
                                 meta={"prompt": PROMPT})
    simulator = Simulator(model)
    mixed = simulator.judge("t", "u0", keys[0], "war3")  # an output against an item: one space
    assert {mixed.preferred.kind, mixed.rejected.kind} == {"item", "output"}
    before = state(store)
    with pytest.raises(UnsupportedMediaError, match="'picture' is image/png"):
        simulator.judge("t", "u0", keys[0], "picture")
    with pytest.raises(InvalidInputError, match="'war3' is a catalog item"):
        simulator.record_preferences("t", "u0", [(keys[0], "war3")])
    assert state(store) == before

    assert simulator.output_pairs("t", "u0") == [(keys[0], keys[1]), (keys[0], keys[2]), (keys[1], keys[2])]
    written = simulator.record_preferences("t", "u0")
    assert len(written) == 3 and simulator.output_pairs("t", "u0") == []  # all judged now
    stored = store.events.feedback("t", "u0")
    assert len(stored) == len(written) and all(is_synthetic(f) and f.type == "pairwise" for f in stored)
    assert {f.meta["source"] for f in stored} == {SIMULATOR_SOURCE} and all(f.meta["margin"] > 0 for f in stored)
    assert simulator.record_preferences("t", "u0") == []  # nothing left to judge
    pairs, used = preference_pairs(model, "t", "u0")  # what DPO training reads
    assert len(pairs) == len(written) and set(used) <= set(keys)

    trained = train(model, "t", "u0", "dpo", steps=1)
    answer = simulator.write(generator, "t", "u0", PROMPT, GenerationOptions(max_new_tokens=6))
    assert answer.user == "u0" and answer.prompt == PROMPT and answer.method == "lora"
    assert answer.adapters == [trained.key] and "note" in answer.evidence  # their history, retrieved
    assert store.artifacts.artifact_blob("t", answer.output)[0].decode("utf-8", "replace") == answer.text


def test_writing_refuses_an_unknown_user_and_an_empty_prompt(model: UserModel) -> None:
    from unipgen.orchestrator import InlineGenerator

    generator = InlineGenerator(model)
    with pytest.raises(NotFoundError, match="unknown user 'ghost'"):
        Simulator(model).write(generator, "t", "ghost", PROMPT)
    with pytest.raises(InvalidInputError, match="the prompt is empty"):
        Simulator(model).write(generator, "t", "u0", "  ")
    assert model.store.artifacts.artifacts("t", "u0") == []


def test_undecided_judgements_give_no_feedback_row(model: UserModel) -> None:
    model.store.users.create_users("t", ["newcomer"])
    blank = Simulator(model).judge("t", "newcomer", "war3", "cook3")
    assert synthetic_feedback([blank]) == []
