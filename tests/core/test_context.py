"""Context building on real data: the MovieLens sample, real MiniLM text vectors, tiny CLIP."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SAMPLE
from unipgen.core.usermodel import UserModel
from unipgen.demo import PERSONA_SAMPLE
from unipgen.errors import NotFoundError
from unipgen.memory import MemoryStore
from unipgen.memory.loaders import load_movielens
from unipgen.settings import Settings

pytest.importorskip("sentence_transformers")


def _two_user_sample(directory: Path) -> Path:
    """Users 2 and 3 of the sample, with only the movies they rated."""
    directory.mkdir()
    ratings = [r for r in csv.DictReader((SAMPLE / "ratings.csv").open()) if r["userId"] in ("2", "3")]
    movies = {r["movieId"] for r in ratings}
    for name, keep in (("ratings.csv", lambda r: r in ratings), ("movies.csv", lambda r: r["movieId"] in movies),
                       ("tags.csv", lambda r: r["userId"] in ("2", "3"))):
        rows = [r for r in csv.DictReader((SAMPLE / name).open()) if keep(r)]
        with (directory / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return directory


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UserModel]:
    root = tmp_path_factory.mktemp("context")
    store = MemoryStore.open(Settings(home=root / "home"))
    load_movielens(store, "ml", _two_user_sample(root / "ml"))
    user_model = UserModel(store, "tiny", cache_dir=root / "cache")
    user_model.embed_catalog("ml")
    user_model.add_documents("ml", "2", [{"key": "review", "text": "Boxing films move me: Warrior is a raw fight story"}])
    photos = [(PERSONA_SAMPLE / "subject" / f"dog-0{i}.jpg").read_bytes() for i in range(2)]
    user_model.add_subject("ml", "2", "rex", name="Rex", class_noun="dog", images=photos)
    yield user_model
    store.close()


def test_every_catalog_item_is_embedded_once(model: UserModel) -> None:
    vectors = model.store.content.vectors("ml", "text", "item")
    assert len(vectors) == len(model.store.catalog.item_texts("ml"))
    assert model.embed_catalog("ml") == 0
    assert all(v.shape == (384,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4 for v in vectors.values())


def test_a_complete_catalog_is_scanned_again_only_once_it_changed(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with MemoryStore.open(Settings(home=tmp_path / "home")) as store:
        store.users.create_tenant("t")
        store.catalog.add_items("t", [{"key": "a", "text": "a film"}, {"key": "b", "text": "a book"}])  # bulk: no vectors
        model = UserModel(store, "tiny", cache_dir=tmp_path / "cache")
        assert model.embed_catalog("t") == 2 and model.embed_catalog("t") == 0
        scans = []
        scan = store.catalog.keys_without_vector
        monkeypatch.setattr(store.catalog, "keys_without_vector", lambda *a, **k: scans.append(a) or scan(*a, **k))
        assert model.embed_catalog("t") == 0 and scans == []  # nothing changed: no scan
        store.catalog.add_items("t", [{"key": "c", "text": "a song"}])
        assert model.embed_catalog("t") == 1 and model.embed_catalog("t") == 0
        store.privacy.forget_item("t", "item", "c")
        store.catalog.add_items("t", [{"key": "d", "text": "a play"}])  # as many items as before, one without a vector
        assert model.embed_catalog("t") == 1 and sorted(store.content.vectors("t", "text", "item")) == ["a", "b", "d"]


def test_context_for_an_image_request(model: UserModel) -> None:
    context = model.context("ml", "2", "image", "a photo of my dog at the gym")
    prefs = context.preferences[0]
    assert prefs.space == "text" and prefs.events == 29 and len(prefs.positive_keywords) == 8
    assert {k.text for k in prefs.positive_keywords} & {"Drama", "Action", "Thriller", "Crime", "Documentary"}
    assert context.conditioning.subjects[0].key == "rex" and len(context.conditioning.subjects[0].image_shas) == 2
    assert {"user:2", "subject:rex"} <= set(context.provenance)
    plan = model.plan(context)
    assert plan.method == "ip_adapter" and plan.subject == "rex"
    assert plan.prompt.startswith("a photo of my dog at the gym, ")


def test_evidence_is_relevant_and_the_users_own(model: UserModel) -> None:
    context = model.context("ml", "2", "text", "a story about boxing and fighting")
    keys = [e.key for e in context.evidence]
    assert "review" in keys[:2]  # the user's own words about boxing
    assert "89774" in keys  # Warrior (2011), rated by user 2
    mine = {e.item for e in model.store.events.events("ml", "2")} | {d.key for d in model.store.content.documents("ml", "2")}
    assert set(keys) <= mine
    assert all(f"{e.kind}:{e.key}" in context.provenance for e in context.evidence)


def test_context_is_plain_json(model: UserModel) -> None:
    context = model.context("ml", "3", "audio", "music for a rainy evening")
    again = type(context).model_validate_json(context.model_dump_json())
    assert again == context
    assert json.loads(context.model_dump_json())["preferences"][0]["long_term"]


def test_unknown_user_is_named(model: UserModel) -> None:
    with pytest.raises(NotFoundError, match="unknown user 'nobody'"):
        model.context("ml", "nobody", "text", "hello")


def test_diversity_changes_the_suggested_items(model: UserModel) -> None:
    from dataclasses import replace

    similar = model.context("ml", "3", "image", "a poster").preferences[0].top_items
    model.builder.config = replace(model.builder.config, diversity=0.9)
    try:
        varied = model.context("ml", "3", "image", "a poster").preferences[0].top_items
    finally:
        model.builder.config = replace(model.builder.config, diversity=0.0)
    assert varied[0] == similar[0]  # MMR keeps the most relevant first
    assert [k.text for k in varied] != [k.text for k in similar]


def test_items_with_images_give_image_space_preferences(tmp_path: Path) -> None:
    from tests.helpers import png_bytes

    with MemoryStore.open(Settings(home=tmp_path / "home")) as store:
        store.users.create_tenant("shop")
        store.users.create_user("shop", "ann")
        model = UserModel(store, "tiny", cache_dir=tmp_path / "cache")
        colors = ["red", "blue", "green", "yellow"]
        model.add_items("shop", [{"key": c, "text": f"a {c} scarf", "image": png_bytes(c, (40, 40))} for c in colors]
                        + [{"key": "plain", "text": "a plain scarf"}])
        assert set(store.content.vectors("shop", "image", "item")) == set(colors)
        assert len(store.content.vectors("shop", "text", "item")) == 5
        store.events.ingest_events("shop", [{"user": "ann", "type": "purchase", "item": "red", "ts": 1},
                                     {"user": "ann", "type": "like", "item": "plain", "ts": 2}])
        context = model.context("shop", "ann", "image", "a scarf for winter")
        by_space = {p.space: p for p in context.preferences}
        assert by_space["text"].events == 2 and by_space["image"].events == 1  # "plain" has no image
        assert len(by_space["image"].positive_keywords) == 8  # words from CLIP's text tower


def test_build_many_gives_the_contexts_build_gives(model: UserModel) -> None:
    requests = [("2", "text", "a review of a boxing film"), ("3", "image", "a poster of my favourite genre"),
                ("nobody", "text", "hello"), ("2", "image", "a portrait of Rex in the snow")]
    many = model.contexts("ml", requests)
    assert isinstance(many[2], NotFoundError) and "unknown user 'nobody'" in str(many[2])
    for (user, modality, instruction), built in zip(requests, many):
        if user == "nobody":
            continue
        one = model.context("ml", user, modality, instruction)
        # batched encoding may differ from a single call in the last float bits: compare what was chosen
        assert [e.key for e in built.evidence] == [e.key for e in one.evidence]
        assert built.provenance == one.provenance and built.profile == one.profile
        assert [p.positive_keywords for p in built.preferences] == [p.positive_keywords for p in one.preferences]
        assert built.conditioning == one.conditioning
    assert many[0].evidence[0].key == "review"  # the boxing review is what the boxing request retrieves
    assert many[3].conditioning.subjects[0].key == "rex"


def test_a_context_for_generation_builds_only_what_the_plan_reads(model: UserModel) -> None:
    full_text = model.context("ml", "2", "text", "a review of a boxing film")
    text = model.context("ml", "2", "text", "a review of a boxing film", for_generation=True)
    assert text.evidence == full_text.evidence and text.preferences == [] and full_text.preferences
    full_image = model.context("ml", "2", "image", "a poster about boxing")
    image = model.context("ml", "2", "image", "a poster about boxing", for_generation=True)
    # an image prompt reads keywords: the recommendations (top items) are not built for it
    assert [p.model_copy(update={"top_items": []}) for p in full_image.preferences] == image.preferences
    assert image.recommendations is None and full_image.recommendations.items
    assert image.evidence == [] and full_image.evidence
    assert not any(p.startswith("document:") for p in image.provenance)  # the image did not use the review
    assert model.plan(image).prompt == model.plan(full_image).prompt  # the plan is the same either way
    assert model.plan(text).prompt == model.plan(full_text).prompt
    many = model.contexts("ml", [("2", "text", "a review of a boxing film"), ("2", "image", "a poster about boxing")],
                          for_generation=True)
    assert [c.evidence for c in many] == [text.evidence, []] and many[1].preferences == image.preferences
