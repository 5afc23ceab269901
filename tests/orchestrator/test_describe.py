"""Describing a user's image in their style (`Describer`, tiny models): the image model's words go
into a text request that carries the user's retrieved documents (and their text adapter when
trained); the description is stored as an output derived from the image and that memory, so
forgetting either removes it; bad requests are named and store nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import png_bytes
from tests.modalities.test_caption import noise_png
from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, NotFoundError, PayloadTooLargeError, UnsupportedMediaError
from unipgen.memory import MemoryStore
from unipgen.orchestrator import Describer, InlineGenerator
from unipgen.orchestrator.describe import TASK, instruction
from unipgen.schema.generation import GenerationOptions
from unipgen.settings import Settings

T = "t"


@pytest.fixture(scope="module")
def describer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Describer]:
    """Users ann (documents about her dog, a subject with two photos) and bob, on the tiny profile."""
    home = tmp_path_factory.mktemp("describe")
    with MemoryStore.open(Settings(home=home / "home", max_blob_bytes=200_000)) as store:
        store.users.create_tenant(T)
        store.users.create_users(T, ["ann", "bob"])
        model = UserModel(store, "tiny", cache_dir=home / "cache")
        model.add_documents(T, "ann", [{"key": "walks", "text": "My dog Rex loves long walks on the beach."},
                                       {"key": "tax", "text": "Filed my tax return on time this year."}])
        model.add_subject(T, "ann", "rex", name="Rex", class_noun="dog", images=[noise_png(3), noise_png(4)])
        yield Describer(model)


def _outputs(describer: Describer, user: str = "ann") -> list[str]:
    return [a.key for a in describer.model.store.artifacts.artifacts(T, user, kind="output")]


def test_a_subject_photo_is_captioned_in_the_users_words_and_stored_with_its_lineage(describer: Describer) -> None:
    store = describer.model.store
    described = describer.describe(T, "ann", {"subject": "rex", "seed": 1, "max_new_tokens": 12})
    assert described.text and described.caption and described.answer is None and described.question is None
    assert described.image.source == "subject" and described.image.key == "rex"
    assert described.image.sha256 == store.content.subjects(T, "ann")[0].image_shas[0]
    assert described.method == "rag_prompt" and "walks" in described.evidence
    assert {"subject:rex", "document:walks"} <= set(described.derived_from)
    assert described.models["random_weights"] is True  # the tiny profile: the words carry no meaning
    record = store.artifacts.artifact(T, described.key, user="ann")
    assert record.kind == "output" and record.media_type.startswith("text/plain")
    assert ("subject", "rex") in record.derived_from and ("document", "walks") in record.derived_from
    assert store.artifacts.artifact_blob(T, described.key)[0].decode() == described.text
    meta = record.meta or {}
    assert meta["task"] == TASK and meta["caption"] == described.caption and meta["modality"] == "text"
    # the text model's prompt: the user's retrieved document, then the image model's words
    assert "Rex loves long walks" in meta["prompt"] and meta["prompt"].endswith(instruction(described.caption))
    # the caption step alone, on bytes in memory (what a generation path can call on a fresh image)
    assert describer.read(store.blobs.get(described.image.sha256)) == (described.caption, None)


def test_a_question_about_a_generated_image_is_answered_and_forgetting_the_image_removes_it(
        describer: Describer) -> None:
    store = describer.model.store
    [image] = InlineGenerator(describer.model).generate(T, "ann", "image", "a photo of a beach",
                                                        GenerationOptions(steps=1))
    described = describer.describe(T, "ann", {"artifact": image.key, "question": "what color is the sky?",
                                              "max_new_tokens": 8})
    assert described.answer and described.question == "what color is the sky?"
    assert described.image.source == "artifact" and f"artifact:{image.key}" in described.derived_from
    prompt = (store.artifacts.artifact(T, described.key).meta or {})["prompt"]
    assert "Question: what color is the sky?" in prompt and f"Answer seen in the photo: {described.answer}" in prompt
    report = store.privacy.forget_item(T, "artifact", image.key, user="ann")
    assert report.residue == [] and described.key not in _outputs(describer)


def test_an_uploaded_photo_is_read_not_stored_and_a_trained_adapter_writes(describer: Describer) -> None:
    from unipgen.orchestrator import train

    store = describer.model.store
    trained = train(describer.model, T, "ann", "text-lora", steps=1)
    photo = png_bytes("green", (40, 30))
    described = describer.describe(T, "ann", {"file": "holiday.png", "max_new_tokens": 8}, photo)
    assert described.method == "lora" and described.adapters == [trained.key]
    assert f"artifact:{trained.key}" in described.derived_from
    assert described.image.key == "holiday.png" and described.image.media_type == "image/png"
    assert not store.blobs.exists(described.image.sha256)  # the photo itself was not kept


def test_forgetting_a_document_it_quoted_or_the_user_removes_the_description(describer: Describer) -> None:
    store = describer.model.store
    store.users.create_users(T, ["cy"])
    describer.model.add_documents(T, "cy", [{"key": "sea", "text": "The beach at dawn is my favourite place."}])
    first = describer.describe(T, "cy", {"file": "a.png", "max_new_tokens": 4}, noise_png(5))
    second = describer.describe(T, "cy", {"file": "b.png", "max_new_tokens": 4}, noise_png(6))
    assert "document:sea" in first.derived_from
    store.privacy.forget_item(T, "document", "sea", user="cy")
    assert first.key not in _outputs(describer, "cy") and second.key not in _outputs(describer, "cy")
    third = describer.describe(T, "cy", {"file": "c.png", "max_new_tokens": 4}, noise_png(7))
    assert store.privacy.forget_user(T, "cy").residue == []
    with pytest.raises(NotFoundError):
        store.artifacts.artifact(T, third.key)


def test_bad_requests_are_named_and_store_nothing(describer: Describer) -> None:
    [text] = InlineGenerator(describer.model).generate(T, "ann", "text", "hello", GenerationOptions(max_new_tokens=2))
    before = _outputs(describer)
    bad: list[tuple[dict[str, object], bytes | None, type[Exception], str]] = [
        ({"subject": "rex"}, None, NotFoundError, "unknown user 'nobody'"),
        ({"artifact": "missing"}, None, NotFoundError, "unknown artifact 'missing' of user 'ann'"),
        ({"subject": "cat"}, None, NotFoundError, "unknown subject 'cat' of user 'ann'"),
        ({"artifact": text.key}, None, UnsupportedMediaError, f"artifact {text.key!r} is text/plain"),
        ({"file": "x.png"}, b"not an image at all", UnsupportedMediaError, "photo 'x.png'"),
        ({"file": "big.png"}, b"\x89PNG" + bytes(200_001), PayloadTooLargeError, "over the limit of 200000 bytes"),
        ({}, None, InvalidInputError, "name exactly one image"),
        ({"subject": "rex", "file": "x.png"}, png_bytes(), InvalidInputError, "name exactly one image"),
        ({"subject": "rex", "question": " "}, None, InvalidInputError, "the question is empty"),
        ({"subject": "rex", "question": "a\x00b"}, None, InvalidInputError, "control character"),
    ]
    for request, data, error, message in bad:
        user = "nobody" if "nobody" in message else "ann"
        with pytest.raises(error, match=message):
            describer.describe(T, user, request, data)
    # another user's image is not theirs to describe
    with pytest.raises(NotFoundError, match="of user 'bob'"):
        describer.describe(T, "bob", {"artifact": text.key})
    assert _outputs(describer) == before
