"""`unipgen simulate USER`: a judgement with its reasons as one JSON object, text output, and
refusals that exit 2 and name the problem."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import as_json, run
from tests.conftest import SAMPLE


def test_simulate_a_pair_and_refusals(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run(home, "ingest", "movielens", str(SAMPLE), "--users", "3")
    run(home, "fit", "--set", "dim=3")
    judged = as_json(run(home, "simulate", "1", "--pair", "2", "1", "--json"))
    assert judged["user"] == "1" and judged["space"] == "behavior" and judged["decided"]
    assert {judged["preferred"]["key"], judged["rejected"]["key"]} == {"1", "2"} and judged["reasons"]
    text = run(home, "simulate", "1", "--pair", "2", "1").stdout
    assert f"would prefer {judged['preferred']['key']}" in text and "because of rate" in text
    for args, message in ((["--pair", "1", "1"], "the two candidates are the same"),
                          (["--pair", "1", "nope"], "unknown candidate 'nope'"),
                          ([], "give exactly one of --pair A B or --prompt TEXT")):
        done = run(home, "simulate", "1", *args, ok=False)
        assert done.returncode == 2 and message in done.stderr
    done = run(home, "simulate", "ghost", "--pair", "1", "2", "--json", ok=False)
    assert done.returncode == 2 and as_json(done)["error"]["code"] == "not_found"


def test_simulate_writes_through_the_generation_path(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run(home, "ingest", "movielens", str(SAMPLE), "--users", "2")
    written = as_json(run(home, "simulate", "2", "--prompt", "Which film did you like most?",
                          "--max-new-tokens", "4", "--json"))
    assert written["user"] == "2" and written["prompt"] == "Which film did you like most?"
    assert written["method"] == "rag_prompt" and written["evidence"]  # user 2's history, retrieved
    outputs = as_json(run(home, "users", "show", "2", "--json"))["counts"]["artifacts"]
    assert outputs == 1  # stored as the user's output, like any generation
