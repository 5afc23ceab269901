"""Protection and consent to training through the service and the SDK: photos uploaded with
`protect=true` are served as their protected copies (the original by name only), every read is
audited, and training on a subject without the user's consent to training is refused (403)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from tests.api.conftest import ADMIN_KEY, live_service  # noqa: E402
from tests.helpers import photo_png  # noqa: E402
from unipgen.client import Client  # noqa: E402
from unipgen.demo import PERSONA_SAMPLE  # noqa: E402
from unipgen.errors import ConsentRequiredError, InvalidInputError  # noqa: E402
from unipgen.settings import Settings  # noqa: E402

PHOTOS = [photo_png(21, (64, 48)), photo_png(22, (48, 64))]
FACE = (PERSONA_SAMPLE / "faces" / "s1-1.pgm").read_bytes()  # the face encoder needs a face


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A service over SQLite whose protections are one quick round (the budget is the settings')."""
    settings = Settings(home=tmp_path_factory.mktemp("protect") / "home", admin_key=ADMIN_KEY, max_blob_bytes=300_000,
                        protect_rounds=1, protect_pgd_steps=1, protect_surrogate_steps=0, protect_step_size=4.0)
    with live_service(settings) as (url, _):
        with Client(url, api_key=ADMIN_KEY) as admin:
            admin.create_tenant("acme")
            key = admin.create_api_key("acme", "tests").key
        with Client(url, api_key=key, timeout=120) as client:
            client.create_user("ann")
            yield client


def test_protected_uploads_are_what_a_download_serves(api: Client, tmp_path: Path) -> None:
    subject = api.add_subject("ann", "rex", name="Rex", class_noun="dog", images=PHOTOS, protect=True)
    assert subject.images == 2 and subject.protection_job is not None
    job = api.wait(subject.protection_job)
    assert job.status == "succeeded" and job.kind == "protect" and job.spec["rounds"] == 1  # the settings' budget
    for position, key in enumerate(job.result["artifacts"]):
        shared, media_type = api.subject_photo("ann", "rex", position)
        assert media_type == "image/png" and shared == api.artifact_content(key)[0] != PHOTOS[position]
        assert api.subject_photo("ann", "rex", position, variant="original")[0] == PHOTOS[position]
    reads = api.audit(user="ann", action="read_subject")
    assert [entry.detail for entry in reads[:3]] == [{"variant": "original", "position": 1},
                                                      {"variant": "protected", "position": 1},
                                                      {"variant": "original", "position": 0}]
    face = api.add_face("ann", "me", FACE, consent=True, protect=True)
    [copy] = api.wait(face.protection_job).result["artifacts"]
    assert api.face("ann", "me")[0] == api.artifact_content(copy)[0]
    assert api.face("ann", "me", variant="original")[0] == FACE
    again = api.wait(api.protect("ann", subject="rex", seed=1).key)  # protected again: the newest copy is served
    assert api.subject_photo("ann", "rex", 0)[0] == api.artifact_content(again.result["artifacts"][0])[0]
    with pytest.raises(InvalidInputError, match="exactly one of subject or face"):
        api.protect("ann")


def test_training_on_photos_needs_consent_to_training(api: Client) -> None:
    if "rex" not in {s.key for s in api.subjects("ann")}:
        api.add_subject("ann", "rex", name="Rex", class_noun="dog", images=PHOTOS)
    assert api.training_consent("ann").granted is False
    with pytest.raises(ConsentRequiredError, match="'ann' has not consented to training") as refused:
        api.train("ann", "lora", subject="rex", steps=1)
    assert refused.value.status_code == 403  # type: ignore[attr-defined]
    assert [j for j in api.jobs(user="ann") if j.kind == "train"] == []  # nothing queued
    given = api.set_training_consent("ann", True)
    assert given.granted and api.user("ann").training_consent_at == given.since
    assert api.audit(user="ann", action="training_consent.grant")[0].actor != "unipgen"  # the caller's key
    assert api.set_training_consent("ann", False).granted is False
