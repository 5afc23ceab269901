"""`unipgen chat`: one turn with --json, and an interactive session read from stdin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli.test_cli import as_json, run
from tests.conftest import SAMPLE


def test_one_turn_then_an_interactive_session_continue_the_same_conversation(tmp_path: Path) -> None:
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "1")
    first = as_json(run(tmp_path, "chat", "1", "-m", "Which film should I watch?", "--session", "s",
                        "--max-new-tokens", "8", "--json"))
    assert first["session"] == "s" and first["reply"] == f"{first['message']}-reply" and first["text"]
    env = {**os.environ, "UNIPGEN_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "unipgen.cli", "chat", "1", "--session", "s", "--max-new-tokens", "8"],
                          input="Something funnier?\n\n/quit\nnever read\n", capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("assistant> ") == 1 and done.stdout.startswith("1> assistant> ")
    from unipgen.memory import MemoryStore
    from unipgen.settings import Settings

    with MemoryStore.open(Settings(home=tmp_path)) as store:
        turns = [d for d in store.content.documents("default", "1", "message")]
    assert [(d.meta["speaker"], d.text) for d in turns][::2] == [("1", "Which film should I watch?"),
                                                                 ("1", "Something funnier?")]
    assert [d.meta["speaker"] for d in turns][1::2] == ["assistant", "assistant"]


def test_bad_chat_requests_are_named(tmp_path: Path) -> None:
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "1")
    done = run(tmp_path, "chat", "nobody", "-m", "hi", "--json", ok=False)
    assert done.returncode == 2 and "unknown user 'nobody'" in json.loads(done.stdout)["error"]["message"]
    done = run(tmp_path, "chat", "1", "--json", ok=False)
    assert done.returncode != 0 and "--json needs --message" in done.stderr
