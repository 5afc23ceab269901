"""One generation path: after a bulk load (items and documents without vectors), the CLI and
the service (whose job runner is what `unipgen worker` runs) build the same context for the
same request, because the job's preparation embeds what the context reads, whoever runs it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import SAMPLE
from unipgen.memory import MemoryStore
from unipgen.memory.loaders import load_movielens
from unipgen.schema.jobs import GenerateSpec
from unipgen.settings import Settings

pytest.importorskip("transformers")

REQUEST = ("2", "text", "Recommend me a film for tonight")


def _by_the_cli(home: Path) -> dict:
    from typer.testing import CliRunner

    from unipgen.cli import app

    _bulk_load(Settings(home=home))
    done = CliRunner().invoke(app, ["--home", str(home), "generate", REQUEST[0], "-m", REQUEST[1], "-i", REQUEST[2],
                                    "--json"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    return {"plan": payload["plan"], "sources": _sources(Settings(home=home), payload["artifacts"][0]["key"])}


def _by_the_service(home: Path) -> dict:
    from unipgen.api.service import Service

    settings = Settings(home=home, encoder_workers=0)  # no uploads here: no encoder process
    _bulk_load(settings)
    service = Service.start(settings)
    try:  # as POST /v1/users/{user}/generate does
        key = service.executor.submit("default", REQUEST[0], GenerateSpec(modality=REQUEST[1],
                                                                          instruction=REQUEST[2])).key
        service.queued()
        deadline = time.monotonic() + 300
        while not (job := service.store.jobs.job("default", key)).done and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        service.close()
    assert job.status == "succeeded", job.error
    return {"plan": job.result["plan"], "sources": _sources(settings, job.result["artifacts"][0])}


def _bulk_load(settings: Settings) -> None:
    """What `unipgen ingest movielens` does: items and documents stored without vectors."""
    with MemoryStore.open(settings) as store:
        load_movielens(store, "default", SAMPLE, users=2)


def _sources(settings: Settings, artifact: str) -> list[tuple[str, str]]:
    with MemoryStore.open(settings) as store:
        return sorted(store.artifacts.artifact("default", artifact).derived_from)


def test_the_cli_and_the_service_build_the_same_context(tmp_path: Path) -> None:
    by_cli, by_service = _by_the_cli(tmp_path / "cli"), _by_the_service(tmp_path / "service")
    read = {kind for kind, _ in by_service["sources"]}
    assert {"item", "document"} <= read  # recommended by the items' text vectors, documents retrieved
    assert by_service == by_cli
