"""Protection of a user's photos as a job (tiny profile): protected copies stored with lineage to
what they protect, served as the shared photo (the original only by name), a download refused
while a protection is under way, and both gone with the original. Training on photos without
consent to training fails its job and stores nothing."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

pytest.importorskip("diffusers")

from tests.helpers import photo_png  # noqa: E402
from unipgen.core.usermodel import UserModel  # noqa: E402
from unipgen.errors import ConflictError  # noqa: E402
from unipgen.memory import MemoryStore  # noqa: E402
from unipgen.orchestrator.inline import InlineExecutor  # noqa: E402
from unipgen.orchestrator.protection import original_photo, protect_spec, shared_photo  # noqa: E402
from unipgen.schema.jobs import ProtectSpec, TrainSpec  # noqa: E402
from unipgen.settings import Settings  # noqa: E402

QUICK = {"rounds": 1, "pgd_steps": 1, "surrogate_steps": 0, "step_size": 4.0}
PHOTOS = [photo_png(11, (64, 48)), photo_png(12, (48, 64))]


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[InlineExecutor]:
    with MemoryStore.open(Settings(home=tmp_path / "home")) as store:
        store.users.create_tenant("t")
        store.users.create_user("t", "ann")
        store.content.add_subject("t", "ann", "rex", name="Rex", class_noun="dog", images=PHOTOS)
        store.content.add_face("t", "ann", "me", photo_png(13, (40, 40)), consent=True)
        yield InlineExecutor(UserModel(store, "tiny", cache_dir=tmp_path / "cache"), backoff_s=0.0)


def test_protected_copies_are_stored_served_and_forgotten_with_their_originals(executor: InlineExecutor) -> None:
    store = executor.model.store
    assert shared_photo(store, "t", "ann", "subject", "rex", 1) == (PHOTOS[1], "image/png", None)  # not protected yet
    job = executor.wait("t", executor.submit("t", "ann", ProtectSpec(subject="rex", **QUICK)).key)
    assert job.status == "succeeded" and job.result["protects"] == "subject:rex" and len(job.result["artifacts"]) == 2
    copies = [store.artifacts.artifact("t", key) for key in job.result["artifacts"]]
    for position, copy in enumerate(copies):
        assert (copy.kind, copy.media_type, copy.derived_from) == ("protected", "image/png", [("subject", "rex")])
        assert copy.meta["position"] == position and copy.meta["method"] == "misalign" and copy.meta["job"] == job.key
        assert copy.meta["original_sha"] == hashlib.sha256(PHOTOS[position]).hexdigest()
        assert 20 * math.log10(255 / 4) <= copy.meta["psnr"] < math.inf
        data, media_type, served = shared_photo(store, "t", "ann", "subject", "rex", position)
        assert (media_type, served) == ("image/png", copy.key) and data != PHOTOS[position]
        assert original_photo(store, "t", "ann", "subject", "rex", position) == (PHOTOS[position], "image/png")
    assert store.privacy.forget_item("t", "subject", "rex", user="ann").residue == []
    assert store.artifacts.artifacts("t", "ann", kind="protected") == []


def test_a_photo_being_protected_is_not_shared_until_it_is(executor: InlineExecutor) -> None:
    store = executor.model.store
    queued = executor.submit("t", "ann", ProtectSpec(face="me", **QUICK))
    with pytest.raises(ConflictError, match=rf"face 'me' of user 'ann' is being protected \(job {queued.key}\)"):
        shared_photo(store, "t", "ann", "face", "me")
    assert original_photo(store, "t", "ann", "face", "me")[1] == "image/png"  # the owner's own read still works
    done = executor.wait("t", queued.key)
    [key] = done.result["artifacts"]
    assert shared_photo(store, "t", "ann", "face", "me")[2] == key
    assert store.artifacts.artifact("t", key).meta["prompt"] == "a photo of sks person"


def test_bad_protections_and_training_without_consent_fail_and_store_nothing(executor: InlineExecutor) -> None:
    store = executor.model.store
    missing = executor.wait("t", executor.submit("t", "ann", ProtectSpec(subject="nope", **QUICK)).key)
    assert missing.status == "failed" and missing.error == {"code": "not_found",
                                                            "message": "unknown subject 'nope' of user 'ann'"}
    for both in ({"subject": "rex", "face": "me"}, {}):
        with pytest.raises(ValidationError, match="exactly one of subject or face"):
            ProtectSpec(**both)
    with pytest.raises(ValidationError, match="step_size"):
        ProtectSpec(subject="rex", epsilon=2, step_size=3)
    with pytest.raises(ValidationError, match="'misalign' or 'aspl'"):
        ProtectSpec(subject="rex", method="glaze")
    spec = protect_spec(Settings(protect_epsilon=2.0, protect_rounds=3, protect_method="aspl"), subject="rex")
    assert (spec.epsilon, spec.rounds, spec.step_size, spec.target, spec.method) == (2.0, 3, 1.0, ("subject", "rex"),
                                                                                     "aspl")
    refused = executor.wait("t", executor.submit("t", "ann", TrainSpec(method="lora", subject="rex", steps=1)).key)
    assert refused.status == "failed" and refused.error["code"] == "consent_required"
    assert "'ann' has not consented to training" in refused.error["message"]
    assert store.artifacts.artifacts("t", "ann") == [] and store.audit.audit_log("t", action="trained_adapter") == []
