"""Recommendations: the user's taste folded in at request time, unseen items, reasons, MMR, kinds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from unipgen.core.preference import PreferenceConfig, build, preference_vectors
from unipgen.core.recommend import taste
from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.snapshot import EventRow

GENRES = {"war": ["tanks", "soldiers", "battle", "trenches"], "cook": ["pasta", "bread", "soup", "cake"],
          "space": ["rockets", "planets", "astronauts", "stars"]}
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def model(sqlite_store: MemoryStore, tmp_path: Path) -> UserModel:
    sqlite_store.users.create_tenant("t")
    model = UserModel(sqlite_store, "tiny", cache_dir=tmp_path / "cache")
    items = [{"key": f"{genre}{n}", "text": f"a film about {word} and more {word}", "meta": {"kind": genre}}
             for genre, words in GENRES.items() for n, word in enumerate(words)]
    model.add_items("t", items)
    events = []
    for u in range(12):  # each user likes one genre: co-choices make the behavior space
        genre = list(GENRES)[u % 3]
        events += [{"user": f"u{u}", "type": "rate", "item": f"{genre}{n}", "value": 5.0,
                    "ts": T0 + timedelta(hours=u * 10 + n)} for n in range(3) if (u + n) % 4 != 3]
    sqlite_store.events.ingest_events("t", events, create_users=True)
    return model


def test_taste_points_where_the_preference_model_does() -> None:
    rng = np.random.default_rng(0)
    vectors = {f"i{n}": rng.standard_normal(6) for n in range(5)}
    rows = [EventRow("u", kind, f"i{n}", T0 + timedelta(days=n), value, None)
            for n, (kind, value) in enumerate([("rate", 5.0), ("like", None), ("dislike", None), ("rate", 2.0),
                                               ("click", None)])]
    config = PreferenceConfig(short_half_life_days=1.0, negative_weight=0.3)
    found = taste(rows, vectors, config)
    state = build([(e.item, e.type, e.value, e.ts) for e in rows], vectors, config)
    units = preference_vectors(state)
    expected = units.long + config.short_term_weight * units.short - config.negative_weight * units.negative
    np.testing.assert_allclose(found.query, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(found.coefficients @ found.vectors, found.query, rtol=1e-5, atol=1e-6)


def test_before_a_fit_the_text_space_ranks_and_after_it_the_behavior_space(model: UserModel) -> None:
    before = model.recommend("t", "u0", k=3)
    assert before.space == "text" and before.fit_generation is None and len(before.items) == 3
    fit = model.fit("t", {"dim": 4})
    assert fit.generation == 1 and fit.stats["users"] == 12
    after = model.recommend("t", "u0", k=3)
    assert after.space == "behavior" and after.fit_generation == 1 and not after.stale
    seen = {e.item for e in model.store.events.events("t", "u0")}
    assert not seen & {i.item for i in after.items}  # unseen items only
    assert after.items[0].item.startswith("war")  # u0 likes war films: the one war film left comes first
    assert [i.score for i in after.items] == sorted((i.score for i in after.items), reverse=True)


def test_reasons_are_the_events_whose_terms_make_the_score(model: UserModel) -> None:
    model.fit("t", {"dim": 4})
    found = model.recommend("t", "u0", k=5)
    top = found.items[0]
    assert top.reasons and all(r.item in {"war0", "war1", "war2"} for r in top.reasons)
    assert sum(r.contribution for r in top.reasons) == pytest.approx(top.score, rel=1e-4)  # u0 has 2-3 events
    assert top.reasons[0].text.startswith("a film about")


def test_include_seen_kind_and_diversity(model: UserModel) -> None:
    model.fit("t", {"dim": 4})
    seen = {e.item for e in model.store.events.events("t", "u0")}
    everything = model.recommend("t", "u0", k=12, include_seen=True)
    assert seen <= {i.item for i in everything.items} and not everything.seen_excluded
    cooking = model.recommend("t", "u0", k=10, kind="cook")
    assert {i.item[:4] for i in cooking.items} == {"cook"} and len(cooking.items) == 4
    plain = model.recommend("t", "u0", k=4)
    diverse = model.recommend("t", "u0", k=4, diversity=0.9)
    assert diverse.diversity == 0.9 and len(diverse.items) == 4
    assert len({i.item[:3] for i in diverse.items}) >= len({i.item[:3] for i in plain.items})
    assert diverse.items[0].item == plain.items[0].item  # MMR's first pick is the most relevant


def test_a_new_item_is_placed_in_the_fitted_space_at_once(model: UserModel) -> None:
    model.fit("t", {"dim": 4})
    model.add_items("t", [{"key": "war9", "text": "a film about tanks and more tanks", "meta": {"kind": "war"}}])
    assert "war9" in model.store.content.vectors("t", "behavior", "item", ["war9"])
    found = model.recommend("t", "u0", k=3, kind="war")
    assert "war9" in [i.item for i in found.items]


def test_a_user_without_events_gets_the_most_chosen_items(model: UserModel) -> None:
    model.store.users.create_user("t", "newcomer")
    assert model.recommend("t", "newcomer").items == []  # no fit, no events: nothing to go on
    model.fit("t", {"dim": 4})
    found = model.recommend("t", "newcomer", k=3)
    assert found.space == "popularity" and len(found.items) == 3 and not found.items[0].reasons


def test_bad_requests_are_refused(model: UserModel) -> None:
    with pytest.raises(InvalidInputError, match="k must be between 1 and 1000"):
        model.recommend("t", "u0", k=0)
    with pytest.raises(InvalidInputError, match="diversity must be within"):
        model.recommend("t", "u0", diversity=1.5)
    with pytest.raises(NotFoundError, match="unknown user 'ghost'"):
        model.recommend("t", "ghost")
    with pytest.raises(InvalidInputError, match="fit settings: dim must be an integer from 1 to 1024"):
        model.fit("t", {"dim": 0})


@pytest.mark.parametrize(("instruction", "expected"), [
    ("Recommend a movie for my Friday night", True), ("What should I watch next?", True),
    ("any suggestions for a film tonight?", True), ("Which films did I rate highest?", False),
    ("Write a review of my favourite film", False), ("Summarise what I watched last month", False),
])
def test_what_counts_as_asking_for_a_recommendation(instruction: str, expected: bool) -> None:
    from unipgen.core.intent import asks_for_recommendation

    assert asks_for_recommendation(instruction) is expected


def test_a_text_request_for_a_recommendation_gets_unseen_items_and_their_lineage(model: UserModel) -> None:
    from unipgen.orchestrator import InlineGenerator
    from unipgen.schema.generation import GenerationOptions

    model.fit("t", {"dim": 4})
    rated = {e.item for e in model.store.events.events("t", "u0")}
    context = model.context("t", "u0", "text", "Recommend a film for tonight", for_generation=True)
    plan = model.plan(context)
    assert plan.recommended and not set(plan.recommended) & rated
    assert "asks for a recommendation" in " ".join(plan.reasons) and "Suggest from these" in plan.prompt
    assert all(e.kind == "document" for e in context.evidence)  # the rated items are not the answer
    assert {f"item:{key}" for key in plan.recommended} <= set(context.provenance)
    [made] = InlineGenerator(model).generate("t", "u0", "text", "Recommend a film for tonight",
                                             GenerationOptions(max_new_tokens=4))
    sources = model.store.artifacts.artifact("t", made.key).derived_from
    assert {("item", key) for key in plan.recommended} <= set(sources)
    past = model.context("t", "u0", "text", "Which films did I rate highest?", for_generation=True)
    assert past.recommendations is None and {e.kind for e in past.evidence} == {"item"}
    assert not model.plan(past).recommended


def test_a_kept_taste_is_never_stale(model: UserModel) -> None:
    model.fit("t", {"dim": 4})
    recommender = model.builder.recommender
    first = model.recommend("t", "u0", k=3)
    assert model.recommend("t", "u0", k=3) == first and len(recommender._tastes) == 1  # kept, reused
    model.store.events.ingest_events("t", [{"user": "u0", "type": "rate", "item": "space0", "value": 5.0,
                                     "ts": T0 + timedelta(days=30)}] * 3)  # a new, recent taste
    moved = model.recommend("t", "u0", k=3)
    assert moved.items[0].item.startswith("space") and "space0" not in [i.item for i in moved.items]
    [*_, newest] = model.store.events.events("t", "u0")
    model.store.privacy.delete_events("t", "u0", ids=[newest.id])  # a deleted event changes the key too
    assert len(recommender._tastes) == 2 and model.recommend("t", "u0", k=3) != moved
    assert len(recommender._tastes) == 3
