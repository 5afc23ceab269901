"""The SDK covers the service: every operation of the app's OpenAPI has an SDK method, and
every SDK method calls an operation that exists (no server needed: the calls are recorded)."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest

pytest.importorskip("fastapi")

from unipgen.api.app import create_app  # noqa: E402
from unipgen.client import _Call, _Routes  # noqa: E402

#: A value for each parameter name the SDK's methods take (recorded, never sent).
ARGUMENTS: dict[str, Any] = {"value": 1, "events": [], "items": [], "documents": [], "messages": [], "images": [b"x"],
                             "image": b"x", "audio": b"x", "event": {"user": "u"}, "consent": True}


class _Recorder(_Routes):
    def __init__(self) -> None:
        self.calls: list[_Call] = []

    def _send(self, call: _Call) -> Any:
        self.calls.append(call)
        return None


def _operations() -> dict[tuple[str, str], re.Pattern[str]]:
    paths = create_app().openapi()["paths"]
    return {(method.upper(), path): re.compile("^" + re.sub(r"\{\w+\}", "[^/]+", path) + "$")
            for path, operations in paths.items() for method in operations}


def test_every_operation_has_an_sdk_method_and_no_method_calls_a_missing_one() -> None:
    recorder = _Recorder()
    for name, method in inspect.getmembers(_Routes, inspect.isfunction):
        if name.startswith("_"):
            continue
        signature = inspect.signature(method)
        args = [ARGUMENTS.get(p.name, "x") for p in list(signature.parameters.values())[1:]
                if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.KEYWORD_ONLY]
        kwargs = {p.name: ARGUMENTS.get(p.name, "x") for p in signature.parameters.values()
                  if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty}
        getattr(recorder, name)(*args, **kwargs)
    operations = _operations()
    called = set()
    for call in recorder.calls:
        matches = [op for op, pattern in operations.items() if op[0] == call.method and pattern.match(call.path)]
        assert matches, f"the SDK calls {call.method} {call.path}, which the service does not have"
        called.update(matches)
    # Event streams are not plain requests: each client reads them its own way (job_events, chat).
    streamed = {("GET", "/v1/jobs/{key}/events"), ("POST", "/v1/users/{user}/chat")}
    assert set(operations) - called == streamed
    from unipgen.client import AsyncClient, Client

    assert all("/v1/jobs/{_seg(key)}/events" in inspect.getsource(c.job_events) for c in (Client, AsyncClient))
    assert all("/v1/users/{_seg(user)}/chat" in inspect.getsource(c.chat) for c in (Client, AsyncClient))
