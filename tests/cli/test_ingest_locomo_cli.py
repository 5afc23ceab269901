"""`unipgen ingest locomo`: one user per conversation, its turns as messages; a second run skips
what is there; a bad file writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import as_json, run
from tests.eval.test_locomo import tiny_sample, write_samples


def test_conversations_become_users_with_their_turns_as_messages(tmp_path: Path) -> None:
    data = write_samples(tmp_path / "tiny.json", [tiny_sample()])
    first = as_json(run(tmp_path / "home", "ingest", "locomo", str(data), "--json"))
    assert first == {"tenant": "default", "users_added": 1, "users_skipped": 0, "messages_added": 9}
    again = as_json(run(tmp_path / "home", "ingest", "locomo", str(data), "--json"))
    assert again["users_added"] == 0 and again["users_skipped"] == 1
    context = as_json(run(tmp_path / "home", "context", "tiny-1", "-m", "text", "-i", "What is the puppy called?",
                          "--json"))
    keys = [e["key"] for e in context["context"]["evidence"]]
    assert "D2:3" in keys and all(k.startswith("D") for k in keys)


def test_a_bad_file_is_named_and_writes_nothing(tmp_path: Path) -> None:
    broken = tiny_sample()
    broken["conversation"]["session_2"][1]["text"] = 7
    data = write_samples(tmp_path / "broken.json", [tiny_sample() | {"sample_id": "ok-1"}, broken])
    done = run(tmp_path / "home", "ingest", "locomo", str(data), "--json", ok=False)
    assert done.returncode == 2 and "text must be a string" in json.loads(done.stdout)["error"]["message"]
    listed = run(tmp_path / "home", "users", "list", "--json", ok=False)  # not even the tenant was made
    assert "unknown tenant 'default'" in json.loads(listed.stdout)["error"]["message"]
