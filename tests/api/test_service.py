"""The service end to end through the SDK, against a live uvicorn server (SQLite and
PostgreSQL): every route round-trips, jobs run in the service, errors keep their codes."""

from __future__ import annotations

import asyncio
import io
import zipfile

import pytest

from tests.api.conftest import Live
from unipgen.client import AsyncClient, Client
from unipgen.demo import PERSONA_SAMPLE
from unipgen.errors import ConflictError, InvalidInputError, NotFoundError, UnauthorizedError

FACE = PERSONA_SAMPLE / "faces" / "s1-1.pgm"
VOICE = PERSONA_SAMPLE / "voice" / "1688-142285-0002.flac"
DOGS = [PERSONA_SAMPLE / "subject" / f"dog-0{i}.jpg" for i in range(2)]
ITEMS = [{"key": "m1", "text": "Warrior (2011) drama about two brothers who fight"},
         {"key": "m2", "text": "Toy Story (1995) animation adventure comedy"},
         {"key": "m3", "text": "Heat (1995) crime thriller in Los Angeles"}]


@pytest.fixture(scope="module")
def api(live: Live) -> Client:
    with live.client() as client:
        client.add_items(ITEMS)
        client.create_user("alice")
        client.add_events([{"user": "alice", "type": "rate", "item": "m1", "value": 5, "ts": 1_700_000_000},
                           {"user": "alice", "type": "like", "item": "m3", "ts": 1_700_000_100}])
        yield client


def test_health_needs_no_key(live: Live) -> None:
    with Client(live.url) as anonymous:
        health = anonymous.health()
        assert health.status == "ok" and health.executor == "inline"
        with pytest.raises(UnauthorizedError, match="no API key"):
            anonymous.list_users()


def test_users_profile_events_documents(api: Client) -> None:
    assert "alice" in api.list_users()
    assert api.set_profile("alice", "city", "Lyon") == {"city": "Lyon"}
    assert api.profile("alice") == {"city": "Lyon"}
    assert api.add_event({"user": "alice", "type": "click", "item": "m2", "ts": "2024-01-01T00:00:00Z"}) == 1
    assert [e.item for e in api.events("alice")][-1] == "m2"
    assert api.add_documents("alice", [{"key": "d1", "text": "I love films about boxing and brothers"}]) == 1
    assert [d.key for d in api.documents("alice")] == ["d1"]
    summary = api.user("alice")
    assert summary.counts["behavior_events"] == 3 and summary.profile == {"city": "Lyon"}
    with pytest.raises(ConflictError, match="already exists"):
        api.create_user("alice")


def test_messages_keep_their_order_and_are_documents(api: Client) -> None:
    api.create_user("talker")
    turns = [{"key": "D1:1", "speaker": "Caroline", "text": "I went to a support group.", "session": "1",
              "ts": "2023-05-08T13:56:00Z"},
             {"key": "D1:2", "speaker": "Melanie", "text": "How was it?", "session": "1",
              "ts": "2023-05-08T13:56:00Z", "caption": "a photo of a lake"}]
    assert api.add_messages("talker", turns) == 2
    assert api.add_messages("talker", [{"key": "D2:1", "speaker": "Caroline", "text": "I painted a sunrise.",
                                       "session": "2", "ts": "2023-05-25T13:14:00Z"}]) == 1
    assert [(m.key, m.speaker, m.session) for m in api.messages("talker")] == [
        ("D1:1", "Caroline", "1"), ("D1:2", "Melanie", "1"), ("D2:1", "Caroline", "2")]
    assert api.messages("talker")[1].caption == "a photo of a lake"
    stored = {d.key: d for d in api.documents("talker")}
    assert stored["D2:1"].kind == "message" and stored["D2:1"].meta["turn"] == 2
    with pytest.raises(InvalidInputError, match=r"messages.1.speaker: .*is blank"):  # nothing of the batch is kept
        api.add_messages("talker", [{"key": "D3:1", "speaker": "Ann", "text": "hi"},
                                   {"key": "D3:2", "speaker": " ", "text": "hi"}])
    assert len(api.messages("talker")) == 3


def test_bulk_events_are_all_or_nothing(api: Client) -> None:
    before = len(api.events("alice"))
    with pytest.raises(NotFoundError, match="unknown item 'nope'"):
        api.add_events([{"user": "alice", "type": "like", "item": "m2", "ts": 1_700_000_200},
                        {"user": "alice", "type": "like", "item": "nope", "ts": 1_700_000_300}])
    assert len(api.events("alice")) == before
    assert api.add_events([{"user": "bob", "type": "like", "item": "m2", "ts": 1_700_000_400}], create_users=True) == 1


def test_uploads_and_audited_reads(api: Client) -> None:
    assert api.add_face("alice", "me", FACE, consent=True).media_type == "image/x-portable-anymap"
    assert api.add_voice("alice", "hello", VOICE, consent=True).media_type == "audio/flac"
    subject = api.add_subject("alice", "rex", name="Rex", class_noun="dog", images=DOGS)
    assert subject.images == 2 and [s.key for s in api.subjects("alice")] == ["rex"]
    assert [f.key for f in api.faces("alice")] == ["me"] and [v.key for v in api.voices("alice")] == ["hello"]
    data, media_type = api.face("alice", "me")
    assert data == FACE.read_bytes() and media_type == "image/x-portable-anymap"
    assert api.voice("alice", "hello")[0] == VOICE.read_bytes()
    actions = [(a.action, a.object_key) for a in api.audit(user="alice")]
    assert ("read_face", "me") in actions and ("read_voice", "hello") in actions


def test_context_and_a_generation_job(api: Client) -> None:
    context = api.context("alice", "text", "a review of a boxing film")
    assert context.evidence and context.evidence[0].key in {"d1", "m1"}
    job = api.generate("alice", "text", "a review of a boxing film", options={"max_new_tokens": 6, "seed": 1},
                       job_id="gen-1")
    assert job.status in {"queued", "running", "succeeded"}
    events = list(api.job_events("gen-1"))
    assert events[-1][0] == "end" and events[-1][1].status == "succeeded"
    done = api.wait("gen-1")
    [key] = done.result["artifacts"]
    artifact = api.artifact(key)
    assert artifact.kind == "output" and ("document", "d1") in artifact.derived_from
    data, media_type = api.artifact_content(key)
    assert media_type.startswith("text/plain") and data
    assert key in [a.key for a in api.artifacts("alice", kind="output")]
    again = api.generate("alice", "text", "a review of a boxing film", options={"max_new_tokens": 6, "seed": 1},
                         job_id="gen-1")
    assert again == done  # idempotent by id: the same job, not run again
    with pytest.raises(ConflictError, match="different request"):
        api.generate("alice", "text", "something else", job_id="gen-1")
    assert [j.key for j in api.jobs(user="alice", status="succeeded")] == ["gen-1"]
    assert ("generate", "gen-1") in [(a.action, a.object_key) for a in api.audit(action="generate")]


def test_a_rating_request_is_scored_with_the_users_ratings(api: Client) -> None:
    job = api.generate("alice", "text", "How would I rate Heat (1995)?", options={"scale": [1, 5]},
                       job_id="rate-1")
    done = api.wait(job.key)
    [key] = done.result["artifacts"]
    artifact = api.artifact(key)
    label = artifact.meta["label"]
    assert api.artifact_content(key)[0].decode() == label["answer"] and label["answer"] in "12345"
    assert label["history"] == 1 and label["mode"] == "mixed" and ("item", "m1") in artifact.derived_from
    assert set(label["sources"]) == {"model", "prior", "neighbours"}
    with pytest.raises(InvalidInputError, match="give labels or scale, not both"):
        api.generate("alice", "text", "Which?", options={"labels": ["a", "b"], "scale": [1, 5]})


def test_training_job_and_cancel(api: Client) -> None:
    queued = api.train("alice", "text-lora", steps=1, job_id="train-1")
    assert queued.kind == "train"
    done = api.wait("train-1")
    assert done.status == "succeeded" and api.artifact(done.result["artifacts"][0]).kind == "adapter"
    with pytest.raises(ConflictError, match="has already succeeded"):
        api.cancel("train-1")


def test_export_and_forget(api: Client, live: Live) -> None:
    with live.client() as client:
        client.create_user("carol")
        client.add_face("carol", "c1", FACE, consent=True)
        archive = zipfile.ZipFile(io.BytesIO(client.export_user("carol")))
        assert "manifest.json" in archive.namelist()
        report = client.forget("carol", "faces", "c1")
        assert report.deleted.get("faces") == 1 and report.residue == []
        assert client.faces("carol") == []
        assert client.forget_user("carol").residue == []
        with pytest.raises(NotFoundError, match="unknown user 'carol'"):
            client.user("carol")


def test_bad_input_gets_a_clear_error(api: Client, live: Live) -> None:
    with pytest.raises(InvalidInputError, match="modality"):
        api.generate("alice", "smell", "hello")
    with pytest.raises(InvalidInputError, match="consent"):
        api.add_face("alice", "nope", FACE, consent=False)
    assert [f.key for f in api.faces("alice")] == ["me"]
    import httpx

    raw = httpx.post(f"{live.url}/v1/events", content=b"{not json", headers={
        "Authorization": f"Bearer {live.key}", "Content-Type": "application/json"})
    assert raw.status_code == 422 and raw.json()["code"] == "invalid_input"
    with pytest.raises(UnauthorizedError, match="invalid API key"):
        Client(live.url, api_key="upg_deadbeef_wrong").list_users()


def test_the_async_client_speaks_the_same_routes(live: Live) -> None:
    async def main() -> tuple[list[str], str, str]:
        async with AsyncClient(live.url, api_key=live.key) as client:
            users = await client.list_users()
            job = await client.generate("alice", "text", "hello there", options={"max_new_tokens": 4}, job_id="async-1")
            seen = [event async for event, _ in client.job_events(job.key)]
            done = await client.wait(job.key)
            return users, seen[-1], done.status

    users, last, status = asyncio.run(main())
    assert "alice" in users and last == "end" and status == "succeeded"
