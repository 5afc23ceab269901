"""`unipgen describe`: a photo file described for a user with --json, the description stored as
their output with its lineage; bad requests exit 2 and name the problem."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import as_json, run
from tests.helpers import png_bytes
from unipgen.cli.describe import description_text
from unipgen.memory import MemoryStore
from unipgen.settings import Settings


def test_a_photo_is_described_and_stored_and_bad_requests_are_named(tmp_path: Path) -> None:
    home, photo = tmp_path / "home", tmp_path / "film-night.png"
    photo.write_bytes(png_bytes("orange", (32, 32)))
    with MemoryStore.open(Settings(home=home)) as store:  # a user whose documents the CLI embeds on its way
        store.users.create_tenant("default")
        store.users.create_users("default", ["ann"])
        store.content.add_documents("default", "ann", [{"key": "films", "text": "Friday is film night at home."}])
    described = as_json(run(home, "describe", "ann", "--file", str(photo), "--question", "what is on the screen?",
                            "--max-new-tokens", "6", "--json"))
    assert described["image"] == {"source": "file", "key": "film-night.png", "media_type": "image/png",
                                  "sha256": described["image"]["sha256"]}
    assert described["text"] and described["answer"] and described["method"] == "rag_prompt"
    assert described["evidence"] == ["films"] and described["derived_from"] == ["document:films"]
    with MemoryStore.open(Settings(home=home)) as store:
        stored = store.artifacts.artifact("default", described["key"], user="ann")
    assert stored.derived_from == [("document", "films")] and (stored.meta or {})["answer"] == described["answer"]
    text = description_text(described)
    assert text.startswith(described["text"]) and f"stored as {described['key']}" in text
    assert "random-weight models" in text  # the tiny profile's words mean nothing, and the output says so
    done = run(home, "describe", "nobody", "--file", str(photo), "--json", ok=False)
    assert done.returncode == 2 and "unknown user 'nobody'" in json.loads(done.stdout)["error"]["message"]
    done = run(home, "describe", "ann", "--json", ok=False)
    assert done.returncode == 2 and "name exactly one image" in json.loads(done.stdout)["error"]["message"]
    (tmp_path / "notes.txt").write_text("not a photo")
    done = run(home, "describe", "ann", "--file", str(tmp_path / "notes.txt"), ok=False)
    assert done.returncode == 2 and "unsupported_media" in done.stderr
