"""`POST /v1/users/{user}/descriptions` through the SDK (sync and async): a generated image and
an uploaded photo described in the user's style and stored with their lineage; bad requests
answer their codes and store nothing; forget removes the descriptions. (A subject's photo is
described in tests/orchestrator/test_describe.py: uploading one here would start the service's
encoder process.) A multi-modal post, whose text is written from its image's caption, goes
through the same service here."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.api.conftest import Live
from tests.helpers import png_bytes
from unipgen.client import AsyncClient, Client
from unipgen.errors import InvalidInputError, NotFoundError, PayloadTooLargeError, UnsupportedMediaError
from unipgen.schema.describe import Description


def noise_png(seed: int, side: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((side, side, 3)) * 255).astype("uint8")).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def api(live: Live) -> Iterator[Client]:
    with live.client() as client:
        client.create_user("painter")
        client.add_documents("painter", [{"key": "pet", "text": "My dog Biscuit naps in the sun all day."}])
        yield client


@pytest.fixture(scope="module")
def image(api: Client) -> str:
    """One of the painter's image outputs (a generation job on the tiny model)."""
    job = api.wait(api.generate("painter", "image", "my dog asleep in the sun", options={"steps": 1}).key)
    assert job.status == "succeeded", job.error
    return str(job.result["artifacts"][0])


def _descriptions(api: Client, user: str = "painter") -> list[str]:
    return [a.key for a in api.artifacts(user, kind="output") if (a.meta or {}).get("task") == "describe"]


def test_a_generated_image_is_described_and_stored_with_its_lineage(api: Client, image: str) -> None:
    described = api.describe("painter", artifact=image, seed=2, max_new_tokens=8)
    assert isinstance(described, Description) and described.text and described.caption
    assert described.image.source == "artifact" and described.image.media_type == "image/png"
    assert {f"artifact:{image}", "document:pet"} <= set(described.derived_from) and described.method == "rag_prompt"
    stored = api.artifact(described.key)
    assert stored.kind == "output" and ("artifact", image) in stored.derived_from
    assert api.artifact_content(described.key)[0].decode() == described.text
    assert [a.object_key for a in api.audit(user="painter", action="describe")] == [described.key]


def test_an_uploaded_photo_and_a_question_through_the_async_client(live: Live, api: Client) -> None:
    async def ask() -> Description:
        async with AsyncClient(live.url, api_key=live.key) as client:
            return await client.describe("painter", file=("beach.png", png_bytes("blue", (32, 32)), "image/png"),
                                         question="what is in the picture?", max_new_tokens=6)

    described = asyncio.run(ask())
    assert described.image.source == "file" and described.image.key == "beach.png" and described.answer
    assert described.question == "what is in the picture?" and described.key in _descriptions(api)


def test_bad_requests_answer_their_codes_and_store_nothing(live: Live, api: Client) -> None:
    job = api.wait(api.generate("painter", "text", "hello", options={"max_new_tokens": 2}).key)
    [text] = job.result["artifacts"]
    before = _descriptions(api)
    with pytest.raises(NotFoundError, match="unknown user 'nobody'"):
        api.describe("nobody", subject="biscuit")
    with pytest.raises(NotFoundError, match="unknown subject 'biscuit' of user 'painter'"):
        api.describe("painter", subject="biscuit")
    with pytest.raises(NotFoundError, match="unknown artifact 'missing' of user 'painter'"):
        api.describe("painter", artifact="missing")
    with pytest.raises(UnsupportedMediaError, match="is text/plain; charset=utf-8, not an image"):
        api.describe("painter", artifact=text)
    with pytest.raises(UnsupportedMediaError, match="photo 'notes.txt'"):
        api.describe("painter", file=("notes.txt", b"just some text", "text/plain"))
    with pytest.raises(PayloadTooLargeError, match="UNIPGEN_MAX_BLOB_BYTES"):  # over the service's 300 kB
        api.describe("painter", file=("big.png", noise_png(2, 400), "image/png"))
    with pytest.raises(InvalidInputError, match="name exactly one image"):
        api.describe("painter")
    with pytest.raises(InvalidInputError, match="name exactly one image"):
        api.describe("painter", subject="biscuit", artifact=text)
    response = httpx.post(f"{live.url}/v1/users/painter/descriptions", data={"artifact": text, "seed": "-1"},
                          headers={"Authorization": f"Bearer {live.key}"})
    assert response.status_code == 422 and response.json()["code"] == "invalid_input"
    assert _descriptions(api) == before


def test_a_multi_modal_post_through_the_sdk_is_one_job_and_one_group(api: Client) -> None:
    """`generate` with several modalities: one job; the text written from the image's caption;
    the members and the group's manifest through the artifacts routes. Bad lists are 422s that
    queue nothing."""
    job = api.wait(api.generate("painter", ["text", "image"], "my dog asleep in the sun",
                                options={"steps": 1, "max_new_tokens": 8, "seed": 2}).key)
    assert job.status == "succeeded", job.error
    assert job.spec["modality"] == ["text", "image"] and job.result["caption"]
    group = api.artifact(job.result["group"])
    assert group.kind == "group" and group.meta["score_kinds"] == {"consistency": "mechanical check"}
    members = {key: api.artifact(key) for key in job.result["artifacts"]}
    assert sorted(group.derived_from) == sorted(("artifact", key) for key in members)
    assert {m.meta["group"] for m in members.values()} == {group.key}
    text = next(m for m in members.values() if m.meta["modality"] == "text")
    image = next(m for m in members.values() if m.meta["modality"] == "image")
    assert ("artifact", image.key) in text.derived_from and job.result["caption"] in text.meta["prompt"]
    jobs = len(api.jobs(user="painter"))
    for bad, says in [("text,text", "asked more than once"), (["image", "painting"], "painting")]:
        with pytest.raises(InvalidInputError, match=says):
            api.generate("painter", bad, "my dog")
    assert len(api.jobs(user="painter")) == jobs


def test_forgetting_the_user_removes_their_descriptions(api: Client) -> None:
    api.create_user("leaver")
    api.describe("leaver", file=png_bytes("red", (32, 32)), max_new_tokens=4)
    report = api.forget_user("leaver")
    assert report.residue == [] and report.deleted.get("artifacts", 0) >= 1
