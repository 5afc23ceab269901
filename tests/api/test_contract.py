"""The error contract of the live service: malformed bodies answer 422 `invalid_input`, 405s
say what is allowed, messages hold no heap addresses nor whole giant ids, the OpenAPI document
lists every status a route gives, docs/errors.md every code, a bad training method is refused at
submit, and a catalog item with an image has an upload path."""

from __future__ import annotations

import inspect
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Live
from tests.helpers import png_bytes
from unipgen import errors
from unipgen.api.app import create_app

REPO = Path(__file__).resolve().parents[2]


def _http(live: Live) -> httpx.Client:
    return httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {live.key}"}, timeout=60)


def test_malformed_json_and_forms_answer_422_invalid_input(live: Live) -> None:
    with _http(live) as http:
        broken = http.post("/v1/users", content=b'{"key": ', headers={"Content-Type": "application/json"})
        assert broken.status_code == 422 and broken.json()["code"] == "invalid_input"
        assert broken.json()["message"].startswith("malformed JSON body at character")
        form = http.post("/v1/users/nobody/faces", content=b"garbage", headers={"Content-Type": "multipart/form-data"})
        assert form.status_code == 422 and form.json()["code"] == "invalid_input"
        assert "malformed request body" in form.json()["message"]


def test_405_names_the_allowed_methods(live: Live) -> None:
    with _http(live) as http:
        answer = http.put("/v1/health")
    assert answer.status_code == 405 and answer.json()["code"] == "method_not_allowed"
    assert answer.headers["Allow"] == "GET"


def test_messages_hold_no_heap_addresses_and_no_giant_ids(live: Live) -> None:
    with _http(live) as http:
        http.post("/v1/users", json={"key": "contract"})
        broken_wav = b"RIFF\x00\x00\x00\x00WAVEfmt "
        answer = http.post("/v1/users/contract/voices", data={"key": "v", "consent": "true"},
                           files={"file": ("a.wav", broken_wav, "audio/wav")})
        assert answer.status_code == 415
        assert " at 0x" not in answer.json()["message"] and "BytesIO object" not in answer.json()["message"]
        giant = "y" * 10_000
        answer = http.get(f"/v1/users/{giant}")
    assert answer.status_code in (404, 422)
    assert len(answer.json()["message"]) < 400 and "(10000 characters)" in answer.json()["message"]


def test_openapi_lists_409_and_413_everywhere_and_415_on_uploads() -> None:
    spec = create_app().openapi()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            documented = set(operation["responses"])
            if path != "/v1/health":
                assert {"401", "404", "409", "413", "422", "429"} <= documented, (method, path)
            if "multipart/form-data" in operation.get("requestBody", {}).get("content", {}):
                assert "415" in documented, (method, path)


def test_docs_errors_lists_every_error_code() -> None:
    import unipgen.core.encoders.base  # noqa: F401  (defines no_face)

    def classes(cls: type[errors.UnipgenError]) -> list[type[errors.UnipgenError]]:
        return [cls] + [sub for child in cls.__subclasses__() for sub in classes(child)]

    page = (REPO / "docs" / "errors.md").read_text()
    codes = {cls.code for cls in classes(errors.UnipgenError) if inspect.isclass(cls)} - {"unipgen_error"}
    assert "no_face" in codes
    missing = sorted(code for code in codes if f"`{code}`" not in page)
    assert missing == []


def test_an_unknown_training_method_is_refused_at_submit(live: Live) -> None:
    with _http(live) as http:
        http.post("/v1/users", json={"key": "trainee"})
        answer = http.post("/v1/users/trainee/trainings", json={"method": "nope", "job_id": "train-nope"})
        assert answer.status_code == 422 and answer.json()["code"] == "invalid_input"
        assert "text-lora" in answer.json()["message"]  # says what would have been accepted
        assert http.get("/v1/jobs/train-nope").status_code == 404  # nothing was queued


def test_a_catalog_item_with_an_image_is_uploaded_as_a_file(live: Live) -> None:
    service = live.app.state.service  # type: ignore[attr-defined]
    with live.client() as api:
        with pytest.raises(errors.InvalidInputError, match="upload it with POST /v1/items/"):
            api.add_items([{"key": "poster", "text": "a red poster", "image": "aGVsbG8="}])
        with pytest.raises(errors.UnsupportedMediaError):
            api.add_item("poster", "a red poster", image=b"not an image")
        assert "image" not in service.store.content.spaces(live.tenant)  # refused writes left nothing
        assert api.add_item("poster", "a red poster", image=png_bytes("red", (32, 32)), meta={"year": 1979}) == 1
    assert "image" in service.store.content.spaces(live.tenant)
    assert service.store.catalog.item_meta(live.tenant)["poster"] == {"year": 1979}
