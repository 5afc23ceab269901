"""The inline generation path: context → plan → backend → artifacts with lineage, and forget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import movielens_model
from unipgen.core.usermodel import UserModel
from unipgen.demo import PERSONA_SAMPLE
from unipgen.errors import ConsentRequiredError, NotFoundError
from unipgen.memory import MemoryStore
from unipgen.orchestrator import InlineGenerator
from unipgen.schema.generation import GenerationOptions
from unipgen.settings import Settings

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InlineGenerator]:
    with movielens_model(tmp_path_factory.mktemp("inline")) as model:
        photos = [(PERSONA_SAMPLE / "subject" / f"dog-0{i}.jpg").read_bytes() for i in range(2)]
        model.add_subject("ml", "2", "rex", name="Rex", class_noun="dog", images=photos)
        yield InlineGenerator(model)


def test_text_output_is_stored_with_its_lineage(generator: InlineGenerator) -> None:
    [made] = generator.generate("ml", "2", "text", "Recommend me a film for tonight")
    store = generator.model.store
    data, media_type = store.artifacts.artifact_blob("ml", made.key)
    assert media_type.startswith("text/plain") and Path(made.path).read_bytes() == data  # may be empty: random LM
    record = next(a for a in store.artifacts.artifacts("ml", "2") if a.key == made.key)
    assert made.plan.method == "rag_prompt" and record.meta["method"] == "rag_prompt"
    assert any(kind == "item" for kind, _ in record.derived_from)


def test_same_seed_same_bytes(generator: InlineGenerator) -> None:
    options = GenerationOptions(seed=7)
    first = generator.generate("ml", "2", "image", "a poster of a desert road", options)[0]
    again = generator.generate("ml", "2", "image", "a poster of a desert road", options)[0]
    assert first.blob_sha == again.blob_sha and first.key != again.key


def test_forgetting_the_subject_removes_its_outputs(generator: InlineGenerator) -> None:
    [made] = generator.generate("ml", "2", "image", "my dog on a beach")
    assert made.plan.method == "ip_adapter" and made.plan.subject == "rex"
    store = generator.model.store
    report = store.privacy.forget_item("ml", "subject", "rex", user="2")
    assert report.residue == [] and report.deleted["artifacts"] >= 1
    with pytest.raises(NotFoundError):
        store.artifacts.artifact_blob("ml", made.key)


def test_a_modality_the_profile_lacks_is_named(generator: InlineGenerator) -> None:
    model = generator.model
    text_only = model.profile.model_copy(update={"name": "text-only", "backends": {"text": model.profile.backends["text"]}})
    lacking = InlineGenerator(UserModel(model.store, text_only))
    with pytest.raises(NotFoundError, match="profile 'text-only' has no 'video' generator"):
        lacking.generate("ml", "2", "video", "a clip")


def test_trained_text_adapter_is_routed_and_forgotten_with_its_documents(generator: InlineGenerator) -> None:
    from unipgen.orchestrator.training import train

    model = generator.model
    n = len(model.store.content.documents("ml", "2"))
    trained = train(model, "ml", "2", "text-lora", steps=2 * n)  # two passes over the user's documents
    first, second = trained.losses[:n], trained.losses[n:]
    assert sum(second) < sum(first)  # the same documents cost less the second time
    [made] = generator.generate("ml", "2", "text", "Describe my taste in films")
    assert made.plan.method == "lora" and made.plan.adapters == [trained.key]
    record = next(a for a in model.store.artifacts.artifacts("ml", "2") if a.key == made.key)
    assert ("artifact", trained.key) in record.derived_from
    # one tag document of user 2 is enough to take the adapter and its outputs with it
    report = model.store.privacy.forget_item("ml", "document", model.store.content.documents("ml", "2")[0].key, user="2")
    assert report.residue == [] and report.deleted["artifacts"] >= 2  # the adapter and what it made
    assert trained.key not in {a.key for a in model.store.artifacts.artifacts("ml", "2")}
    assert generator.generate("ml", "2", "text", "Describe my taste in films")[0].plan.method == "rag_prompt"


def test_training_refuses_unknown_methods_and_empty_histories(generator: InlineGenerator) -> None:
    from unipgen.errors import InvalidInputError
    from unipgen.orchestrator.training import train

    with pytest.raises(InvalidInputError, match="unknown training method 'dreambooth'"):
        train(generator.model, "ml", "2", "dreambooth")
    with pytest.raises(InvalidInputError, match="user '1' has no documents"):
        train(generator.model, "ml", "1", "text-lora")


@pytest.mark.slow
def test_subject_lora_is_trained_routed_and_used(tmp_path: Path) -> None:
    from unipgen.orchestrator.training import train

    with MemoryStore.open(Settings(home=tmp_path / "home")) as store:
        store.users.create_tenant("t")
        store.users.create_user("t", "ann")
        model = UserModel(store, "tiny", cache_dir=tmp_path / "cache")
        photos = [(PERSONA_SAMPLE / "subject" / f"dog-0{i}.jpg").read_bytes() for i in range(2)]
        model.add_subject("t", "ann", "rex", name="Rex", class_noun="dog", images=photos)
        with pytest.raises(ConsentRequiredError, match="'ann' has not consented to training: lora would learn"):
            train(model, "t", "ann", "lora", steps=3)  # storing the photos is no consent to training on them
        store.users.set_training_consent("t", "ann", True)
        trained = train(model, "t", "ann", "lora", steps=3)
        [made] = InlineGenerator(model).generate("t", "ann", "image", "Rex on a sofa")
        assert made.plan.method == "lora" and made.plan.adapters == [trained.key]
        assert "sks dog" in made.plan.prompt
        ti = train(model, "t", "ann", "textual-inversion", subject="rex", steps=2)
        assert next(a for a in store.artifacts.artifacts("t", "ann") if a.key == ti.key).meta["token"] == "<rex>"
        trainings = store.audit.audit_log("t", user="ann", action="trained_adapter")
        assert [(e.object_key, e.detail["consented"]) for e in trainings] == [(ti.key, ["subject:rex"]),
                                                                              (trained.key, ["subject:rex"])]
        assert store.privacy.forget_item("t", "subject", "rex", user="ann").residue == []
        assert store.artifacts.artifacts("t", "ann") == []
