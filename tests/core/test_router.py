"""Routing and prompt composition: the method chosen for each situation, with its reasons."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from unipgen.core.prompts import TOKEN_BUDGETS, compose, count_tokens
from unipgen.core.router import mentioned_subject, route
from unipgen.schema.context import (
    AdapterRef,
    Conditioning,
    Evidence,
    Keyword,
    Preferences,
    SubjectAsset,
    UserContext,
)

NOW = datetime(2024, 1, 1, tzinfo=timezone.utc)
DOG = SubjectAsset(key="rex", name="Rex", class_noun="dog", image_shas=["a" * 64, "b" * 64])
LIKES = Preferences(space="text", events=10, drift=0.1,
                    positive_keywords=[Keyword(text=w, score=0.5, source="vocabulary") for w in ("Western", "Drama")],
                    negative_keywords=[Keyword(text="Horror", score=0.4, source="vocabulary")])
EVIDENCE = [Evidence(kind="document", key="d1", text="I adore dusty desert towns", score=0.03)]


def context(modality: str, instruction: str, **conditioning) -> UserContext:  # noqa: ANN003
    return UserContext(tenant="t", user="u", modality=modality, instruction=instruction, profile={"city": "Lyon"},
                       evidence=EVIDENCE, preferences=[LIKES], conditioning=Conditioning(**conditioning),
                       built_at=NOW)


def test_image_without_subject_folds_keywords_into_the_prompt() -> None:
    plan = route(context("image", "a quiet town at dusk"))
    assert plan.method == "prompt_only"
    assert plan.prompt == "a quiet town at dusk, Western, Drama"
    assert plan.negative_prompt == "Horror"


def test_named_subject_without_adapter_uses_ip_adapter() -> None:
    plan = route(context("image", "my dog in the snow", subjects=[DOG]))
    assert (plan.method, plan.subject) == ("ip_adapter", "rex")
    assert "2 reference images" in plan.reasons[0]


def test_trained_lora_wins_and_rewrites_the_subject() -> None:
    trained = DOG.model_copy(update={"adapters": [AdapterRef(key="rex-lora", method="lora", blob_sha="c" * 64)]})
    plan = route(context("image", "Rex in the snow", subjects=[trained]))
    assert (plan.method, plan.adapters) == ("lora", ["rex-lora"])
    assert "sks dog" in plan.prompt


def test_text_uses_evidence_or_an_adapter() -> None:
    rag = route(context("text", "Write me a postcard"))
    assert rag.method == "rag_prompt" and rag.evidence == ["d1"]
    assert "I adore dusty desert towns" in rag.prompt and "city: Lyon" in rag.prompt
    adapter = AdapterRef(key="u-text", method="lora", blob_sha=None, meta={"modality": "text"})
    assert route(context("text", "Write me a postcard", adapters=[adapter])).method == "lora"


def test_speech_is_read_in_the_users_voice_when_they_have_one() -> None:
    voiced = route(context("speech", "Happy birthday, Ana!", voice_embedding=[1.0, 0.0]))
    assert voiced.method == "speaker_embedding"
    assert voiced.prompt == "Happy birthday, Ana!"  # the words to say, with nothing added
    without = route(context("speech", "Happy birthday, Ana!"))
    assert without.method == "prompt_only" and "no voice recording" in without.reasons[0]
    assert route(context("audio", "say something upbeat", voice_embedding=[1.0, 0.0])).method == "prompt_only"


def test_3d_of_a_subject_starts_from_its_image() -> None:
    assert route(context("3d", "a 3d model of my dog", subjects=[DOG])).method == "image_to_3d"


def test_self_portrait_conditions_on_the_face() -> None:
    plan = route(context("image", "a portrait of me as an astronaut", face_embeddings=[[0.0] * 4]))
    assert plan.method == "ip_adapter" and plan.subject is None


def test_subject_mention_matches_whole_words_only() -> None:
    assert mentioned_subject("hotdog stand", [DOG]) is None
    assert mentioned_subject("REX runs", [DOG]) is DOG


@pytest.mark.parametrize("budget", [8, 12, 40])
def test_keyword_prompt_stays_within_budget(budget: int) -> None:
    many = [Keyword(text=f"word{i}", score=0.1, source="vocabulary") for i in range(50)]
    composed = compose("image", "a cat", profile={}, keywords=many, budget=budget)
    assert count_tokens(composed.prompt) <= max(budget, count_tokens("a cat"))
    assert composed.prompt.startswith("a cat")


def test_text_prompt_never_cuts_the_instruction() -> None:
    long = [Evidence(kind="document", key=f"d{i}", text="word " * 50, score=0.1) for i in range(20)]
    composed = compose("text", "Summarise my week", profile={}, evidence=long, budget=120)
    assert composed.prompt.endswith("Summarise my week")
    assert composed.used_tokens <= 120 and len(composed.evidence_keys) == 2
    assert TOKEN_BUDGETS["image"] < 77  # CLIP's window


def test_plan_is_json() -> None:
    plan = route(context("image", "my dog", subjects=[DOG]))
    assert type(plan).model_validate_json(plan.model_dump_json()) == plan
