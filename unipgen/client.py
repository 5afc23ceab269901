"""The Python SDK of the unipgen service: `Client` (sync) and `AsyncClient` (asyncio), on httpx.

Each route is written once, in `_Routes`, as a description of the request (`_Call`) and how to
read its answer; `Client` sends it with `httpx.Client`, `AsyncClient` with `httpx.AsyncClient`
(its methods return coroutines). Errors come back as the same `UnipgenError` subclasses the
service raised (`NotFoundError`, `UnauthorizedError`...), with the same code and message.

    from unipgen.client import Client

    with Client("http://127.0.0.1:8000", api_key="upg_...") as api:
        api.create_user("alice")
        api.add_events([{"user": "alice", "type": "like", "item": "m1", "ts": 1700000000}])
        job = api.wait(api.generate("alice", "image", "a poster of my favourite film").key)
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter

from unipgen.client_events import EventReader, chat_event
from unipgen.errors import UnipgenError, error_from
from unipgen.schema import api as s
from unipgen.schema.context import Recommendations, UserContext
from unipgen.schema.describe import Description
from unipgen.schema.jobs import JobRecord
from unipgen.schema.memory import (
    DocumentIn,
    EventIn,
    EventRecord,
    FeedbackIn,
    FitRecord,
    ForgetReport,
    TrainingConsent,
    UserSummary,
)
from unipgen.schema.messages import MessageIn
from unipgen.schema.simulator import PairwiseJudgement

#: A file to upload: a path, raw bytes, or (filename, bytes, media type).
FileLike = str | Path | bytes | tuple[str, bytes, str]


@dataclass(frozen=True)
class _Call:
    """One request and how to read its answer (`parse` gets the httpx response)."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    parse: Callable[[Any], Any] = field(default=lambda response: response.json())


def _as(model: Any) -> Callable[[Any], Any]:
    adapter = TypeAdapter(model)
    return lambda response: adapter.validate_python(response.json())


def _bytes(response: Any) -> tuple[bytes, str]:
    return response.content, response.headers.get("content-type", "application/octet-stream")


def _file(field_name: str, file: FileLike, default_type: str = "application/octet-stream") -> tuple[str, tuple[str, bytes, str]]:
    if isinstance(file, tuple):
        return field_name, file
    if isinstance(file, bytes):
        return field_name, ("upload", file, default_type)
    path = Path(file)
    return field_name, (path.name, path.read_bytes(), default_type)


def _dump(rows: Sequence[BaseModel | dict[str, Any]]) -> list[Any]:
    return [row.model_dump(mode="json", exclude_none=True) if isinstance(row, BaseModel) else row for row in rows]


class _Routes:
    """Every route of the service; `_send` (sync or async) is the subclass's."""

    def _send(self, call: _Call) -> Any:
        raise NotImplementedError

    # -- admin (the admin key) --------------------------------------------------------------

    def create_tenant(self, tenant: str) -> s.TenantPublic:
        return self._send(_Call("POST", "/v1/tenants", json={"key": tenant}, parse=_as(s.TenantPublic)))

    def list_tenants(self) -> list[s.TenantPublic]:
        return self._send(_Call("GET", "/v1/tenants", parse=_as(list[s.TenantPublic])))

    def create_api_key(self, tenant: str, name: str) -> s.ApiKeyCreated:
        """A new key for `tenant`; its `key` is shown once."""
        return self._send(_Call("POST", f"/v1/tenants/{_seg(tenant)}/api-keys", json={"name": name},
                                parse=_as(s.ApiKeyCreated)))

    def list_api_keys(self, tenant: str) -> list[s.ApiKeyPublic]:
        return self._send(_Call("GET", f"/v1/tenants/{_seg(tenant)}/api-keys", parse=_as(list[s.ApiKeyPublic])))

    def revoke_api_key(self, tenant: str, prefix: str) -> s.ApiKeyPublic:
        return self._send(_Call("DELETE", f"/v1/tenants/{_seg(tenant)}/api-keys/{_seg(prefix)}", parse=_as(s.ApiKeyPublic)))

    # -- users, profile, behaviors, documents, catalog -------------------------------------------

    def health(self) -> s.Health:
        return self._send(_Call("GET", "/v1/health", parse=_as(s.Health)))

    def create_user(self, user: str) -> s.UserPublic:
        return self._send(_Call("POST", "/v1/users", json={"key": user}, parse=_as(s.UserPublic)))

    def list_users(self) -> list[str]:
        return self._send(_Call("GET", "/v1/users"))

    def user(self, user: str) -> UserSummary:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}", parse=_as(UserSummary)))

    def profile(self, user: str) -> dict[str, Any]:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/profile"))

    def set_profile(self, user: str, name: str, value: Any) -> dict[str, Any]:
        return self._send(_Call("PUT", f"/v1/users/{_seg(user)}/profile/{_seg(name)}", json={"value": value}))

    def add_event(self, event: EventIn | dict[str, Any]) -> int:
        return self._send(_Call("POST", "/v1/events", json=_dump([event])[0], parse=_count))

    def add_events(self, events: Sequence[EventIn | dict[str, Any]], *, create_users: bool = False) -> int:
        """All the events or none; returns how many were written."""
        return self._send(_Call("POST", "/v1/events/bulk", json={"events": _dump(events), "create_users": create_users},
                                parse=_count))

    def events(self, user: str, limit: int | None = None) -> list[EventRecord]:
        """The user's events, oldest first; each `id` is what `delete_event` takes."""
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/events", params=_params(limit=limit),
                                parse=_as(list[EventRecord])))

    def delete_event(self, user: str, event_id: int) -> ForgetReport:
        """Delete one event, and every output derived from the user's history."""
        return self._send(_Call("DELETE", f"/v1/users/{_seg(user)}/events/{_seg(event_id)}", parse=_as(ForgetReport)))

    def delete_events(self, user: str, *, type: str | None = None, item: str | None = None,
                      since: datetime | None = None, until: datetime | None = None) -> ForgetReport:
        """Delete the user's events matching every filter given (all with none), and every output
        derived from the user's history. `since` and `until` are aware datetimes."""
        params = _params(type=type, item=item, since=since and since.isoformat(), until=until and until.isoformat())
        return self._send(_Call("DELETE", f"/v1/users/{_seg(user)}/events", params=params, parse=_as(ForgetReport)))

    def add_items(self, items: Sequence[dict[str, Any] | BaseModel], *, exist_ok: bool = False) -> int:
        """Catalog items without images, in one request (`add_item` uploads one with its image)."""
        return self._send(_Call("POST", "/v1/items", json={"items": _dump(items), "exist_ok": exist_ok}, parse=_count))

    def add_item(self, key: str, text: str, *, image: FileLike | None = None, meta: dict[str, Any] | None = None,
                 exist_ok: bool = False) -> int:
        """One catalog item, with its image uploaded as a file."""
        data = {"text": text, "exist_ok": str(exist_ok).lower()} | ({"meta": json.dumps(meta)} if meta else {})
        return self._send(_Call("POST", f"/v1/items/{key}", data=data,
                                files=None if image is None else [_file("image", image)], parse=_count))

    def add_documents(self, user: str, documents: Sequence[DocumentIn | dict[str, Any]]) -> int:
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/documents", json={"documents": _dump(documents)},
                                parse=_count))

    def documents(self, user: str) -> list[DocumentIn]:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/documents", parse=_as(list[DocumentIn])))

    def add_messages(self, user: str, messages: Sequence[MessageIn | dict[str, Any]]) -> int:
        """Turns of a conversation the user took part in, appended in order."""
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/messages", json={"messages": _dump(messages)},
                                parse=_count))

    def messages(self, user: str) -> list[MessageIn]:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/messages", parse=_as(list[MessageIn])))

    def judge(self, user: str, first: str, second: str) -> PairwiseJudgement:
        """The user simulator: which of two candidates (items or the user's text outputs) the user
        would prefer, and the events behind it."""
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/judgements",
                                json={"first": first, "second": second}, parse=_as(PairwiseJudgement)))

    def record_preferences(self, user: str, pairs: Sequence[tuple[str, str]] | None = None) -> list[FeedbackIn]:
        """Synthetic pairwise preferences between the user's text outputs, judged by the simulator
        and stored for DPO (None: every unjudged pair of outputs to the same prompt)."""
        body = {"pairs": [list(pair) for pair in pairs] if pairs is not None else None}
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/synthetic-preferences", json=body,
                                parse=_as(list[FeedbackIn])))

    def context(self, user: str, modality: str, instruction: str) -> UserContext:
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/context",
                                json={"modality": modality, "instruction": instruction}, parse=_as(UserContext)))

    def recommend(self, user: str, *, k: int = 10, diversity: float = 0.0, include_seen: bool = False,
                  kind: str | None = None) -> Recommendations:
        """Items the user is likeliest to want next, each with the events behind it."""
        body = {"k": k, "diversity": diversity, "include_seen": include_seen, "kind": kind}
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/recommendations", json=body,
                                parse=_as(Recommendations)))

    def fit(self, *, config: dict[str, Any] | None = None, job_id: str | None = None) -> JobRecord:
        """Queue a fit of the tenant's behavior space (poll it with `job`, or `wait`)."""
        return self._send(_Call("POST", "/v1/fits", json={"config": config or {}, "job_id": job_id},
                                parse=_as(JobRecord)))

    def fits(self) -> list[FitRecord]:
        return self._send(_Call("GET", "/v1/fits", parse=_as(list[FitRecord])))

    def current_fit(self) -> FitRecord:
        return self._send(_Call("GET", "/v1/fits/current", parse=_as(FitRecord)))

    # -- uploads ---------------------------------------------------------------------------

    def add_face(self, user: str, key: str, image: FileLike, *, consent: bool, protect: bool = False) -> s.FacePublic:
        """Upload a face photo (`consent`: to storing it); `protect` also queues its protection from fine-tuning."""
        data = {"key": key, "consent": str(consent).lower(), "protect": str(protect).lower()}
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/faces", data=data, files=[_file("file", image)],
                                parse=_as(s.FacePublic)))

    def faces(self, user: str) -> list[s.MediaPublic]:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/faces", parse=_as(list[s.MediaPublic])))

    def face(self, user: str, key: str, *, variant: str = "shared") -> tuple[bytes, str]:
        """The photo's bytes and type (audited): its protected copy if any; `variant="original"`: as uploaded."""
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/faces/{_seg(key)}", params={"variant": variant},
                                parse=_bytes))

    def add_voice(self, user: str, key: str, audio: FileLike, *, consent: bool) -> s.MediaPublic:
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/voices", data={"key": key, "consent": str(consent).lower()},
                                files=[_file("file", audio)], parse=_as(s.MediaPublic)))

    def voices(self, user: str) -> list[s.MediaPublic]:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/voices", parse=_as(list[s.MediaPublic])))

    def voice(self, user: str, key: str) -> tuple[bytes, str]:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/voices/{_seg(key)}", parse=_bytes))

    def add_subject(self, user: str, key: str, *, name: str, class_noun: str,
                    images: Sequence[FileLike], protect: bool = False) -> s.SubjectPublic:
        """Upload a subject with its photos; `protect` queues their protection from fine-tuning."""
        data = {"key": key, "name": name, "class_noun": class_noun, "protect": str(protect).lower()}
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/subjects", data=data,
                                files=[_file("files", image) for image in images], parse=_as(s.SubjectPublic)))

    def subjects(self, user: str) -> list[s.SubjectPublic]:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/subjects", parse=_as(list[s.SubjectPublic])))

    def describe(self, user: str, *, artifact: str | None = None, subject: str | None = None,
                 file: FileLike | None = None, question: str | None = None, seed: int = 0,
                 max_new_tokens: int = 60) -> Description:
        """Describe one of the user's images (exactly one of `artifact`, `subject`, `file`): a
        caption, or the answer to `question`, in the user's style; stored as an output."""
        data = _params(artifact=artifact, subject=subject, question=question) | {
            "seed": str(seed), "max_new_tokens": str(max_new_tokens)}
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/descriptions", data=data,
                                files=None if file is None else [_file("file", file)], parse=_as(Description)))

    def subject_photo(self, user: str, key: str, position: int = 0, *, variant: str = "shared") -> tuple[bytes, str]:
        """A subject's photo (from 0): its protected copy when it has one (`variant="original"`: as uploaded)."""
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/subjects/{_seg(key)}/photos/{_seg(position)}",
                                params={"variant": variant}, parse=_bytes))

    def protect(self, user: str, *, subject: str | None = None, face: str | None = None, seed: int = 0,
                job_id: str | None = None) -> JobRecord:
        """Queue the protection of a subject's photos (or a face photo) from fine-tuning (202)."""
        body = {"subject": subject, "face": face, "seed": seed, "job_id": job_id}
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/protections", json=body, parse=_as(JobRecord)))

    def training_consent(self, user: str) -> TrainingConsent:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/training-consent", parse=_as(TrainingConsent)))

    def set_training_consent(self, user: str, granted: bool) -> TrainingConsent:
        """Record (or withdraw) the user's consent to adapters trained on their faces and subjects."""
        return self._send(_Call("PUT", f"/v1/users/{_seg(user)}/training-consent", json={"granted": granted},
                                parse=_as(TrainingConsent)))

    # -- jobs ------------------------------------------------------------------------------

    def generate(self, user: str, modality: str | list[str], instruction: str, *,
                 options: dict[str, Any] | None = None, job_id: str | None = None) -> JobRecord:
        """Queue a generation (202); follow it with `job`, `wait` or `job_events`. Several
        modalities (a list, or "text,image") make one multi-modal post: one job, one group."""
        body = {"modality": modality, "instruction": instruction, "options": options or {}, "job_id": job_id}
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/generations", json=body, parse=_as(JobRecord)))

    def train(self, user: str, method: str, *, subject: str | None = None, steps: int = 20, seed: int = 0,
              job_id: str | None = None) -> JobRecord:
        body = {"method": method, "subject": subject, "steps": steps, "seed": seed, "job_id": job_id}
        return self._send(_Call("POST", f"/v1/users/{_seg(user)}/trainings", json=body, parse=_as(JobRecord)))

    def job(self, key: str) -> JobRecord:
        return self._send(_Call("GET", f"/v1/jobs/{_seg(key)}", parse=_as(JobRecord)))

    def jobs(self, *, user: str | None = None, status: str | None = None, limit: int = 50) -> list[JobRecord]:
        return self._send(_Call("GET", "/v1/jobs", params=_params(user=user, status=status, limit=limit),
                                parse=_as(list[JobRecord])))

    def cancel(self, key: str) -> JobRecord:
        return self._send(_Call("POST", f"/v1/jobs/{_seg(key)}/cancel", parse=_as(JobRecord)))

    # -- artifacts, audit, export, forget ----------------------------------------------------------

    def artifacts(self, user: str, kind: str | None = None) -> list[s.ArtifactPublic]:
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/artifacts", params=_params(kind=kind),
                                parse=_as(list[s.ArtifactPublic])))

    def artifact(self, key: str) -> s.ArtifactPublic:
        return self._send(_Call("GET", f"/v1/artifacts/{_seg(key)}", parse=_as(s.ArtifactPublic)))

    def artifact_content(self, key: str) -> tuple[bytes, str]:
        """The artifact's bytes and media type."""
        return self._send(_Call("GET", f"/v1/artifacts/{_seg(key)}/content", parse=_bytes))

    def audit(self, *, user: str | None = None, action: str | None = None, limit: int = 100) -> list[s.AuditPublic]:
        return self._send(_Call("GET", "/v1/audit", params=_params(user=user, action=action, limit=limit),
                                parse=_as(list[s.AuditPublic])))

    def export_user(self, user: str) -> bytes:
        """The user's archive (zip) as bytes."""
        return self._send(_Call("GET", f"/v1/users/{_seg(user)}/export", parse=lambda r: r.content))

    def forget_user(self, user: str) -> ForgetReport:
        return self._send(_Call("DELETE", f"/v1/users/{_seg(user)}", parse=_as(ForgetReport)))

    def forget(self, user: str, kind: str, key: str) -> ForgetReport:
        """Forget one of the user's `faces`, `voices`, `documents` or `subjects`."""
        return self._send(_Call("DELETE", f"/v1/users/{_seg(user)}/{_seg(kind)}/{_seg(key)}", parse=_as(ForgetReport)))


def _seg(value: Any) -> str:
    """One path segment, percent-encoded: an id may hold '%', '?', '#', spaces or unicode."""
    return quote(str(value), safe="")


def _count(response: Any) -> int:
    return int(response.json()["count"])


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _raise_for(response: Any) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {"code": "http_error", "message": f"HTTP {response.status_code}: {response.text[:200]}"}
    error = error_from(body) if isinstance(body, dict) and "code" in body else UnipgenError(str(body))
    error.status_code = response.status_code  # type: ignore[attr-defined]
    raise error


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class Client(_Routes):
    """The service's routes as blocking calls. Use as a context manager, or call `close`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 transport: Any = None) -> None:
        import httpx

        self._http = httpx.Client(base_url=base_url, headers=_headers(api_key), timeout=timeout, transport=transport)

    def _send(self, call: _Call) -> Any:
        response = self._http.request(call.method, call.path, json=call.json, params=call.params, data=call.data,
                                      files=call.files)
        _raise_for(response)
        return call.parse(response)

    def wait(self, key: str, *, timeout: float = 600.0, poll_s: float = 0.2) -> JobRecord:
        """Poll job `key` until it ends (or `timeout` seconds pass: the record as it is then)."""
        deadline = time.monotonic() + timeout
        while not (job := self.job(key)).done and time.monotonic() < deadline:
            time.sleep(poll_s)
        return job

    def job_events(self, key: str) -> Iterator[tuple[str, JobRecord]]:
        """The job's server-sent events: ("progress", record)... then ("end", record)."""
        for event, data in self._events("GET", f"/v1/jobs/{_seg(key)}/events"):
            yield event, JobRecord.model_validate(data)

    def chat(self, user: str, text: str, *, session: str = "chat", seed: int = 0) -> Iterator[tuple[str, Any]]:
        """One chat turn: ("token", piece)... as the model writes, then ("end", the stored
        `ChatReply`); an error after the stream started raises it like any call."""
        body = {"text": text, "session": session, "seed": seed}
        for event, data in self._events("POST", f"/v1/users/{_seg(user)}/chat", body):
            yield chat_event(event, data)

    def _events(self, method: str, path: str, body: Any = None) -> Iterator[tuple[str, Any]]:
        """A route's server-sent events as (event, JSON data); an error status raises first."""
        with self._http.stream(method, path, json=body, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            reader = EventReader()
            for line in response.iter_lines():
                if (done := reader.feed(line)) is not None:
                    yield done

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Routes):
    """The same routes as coroutines (`await api.create_user("alice")`)."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout: float = 60.0,
                 transport: Any = None) -> None:
        import httpx

        self._http = httpx.AsyncClient(base_url=base_url, headers=_headers(api_key), timeout=timeout,
                                       transport=transport)

    async def _send(self, call: _Call) -> Any:
        response = await self._http.request(call.method, call.path, json=call.json, params=call.params,
                                            data=call.data, files=call.files)
        _raise_for(response)
        return call.parse(response)

    async def wait(self, key: str, *, timeout: float = 600.0, poll_s: float = 0.2) -> JobRecord:
        import asyncio

        deadline = time.monotonic() + timeout
        while not (job := await self.job(key)).done and time.monotonic() < deadline:  # type: ignore[misc]
            await asyncio.sleep(poll_s)
        return job

    async def job_events(self, key: str) -> AsyncIterator[tuple[str, JobRecord]]:
        async for event, data in self._events("GET", f"/v1/jobs/{_seg(key)}/events"):
            yield event, JobRecord.model_validate(data)

    async def chat(self, user: str, text: str, *, session: str = "chat",
                   seed: int = 0) -> AsyncIterator[tuple[str, Any]]:
        """`Client.chat`, as an async iterator."""
        body = {"text": text, "session": session, "seed": seed}
        async for event, data in self._events("POST", f"/v1/users/{_seg(user)}/chat", body):
            yield chat_event(event, data)

    async def _events(self, method: str, path: str, body: Any = None) -> AsyncIterator[tuple[str, Any]]:
        async with self._http.stream(method, path, json=body, timeout=None) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(response)
            reader = EventReader()
            async for line in response.aiter_lines():
                if (done := reader.feed(line)) is not None:
                    yield done

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


__all__ = ["AsyncClient", "Client"]
