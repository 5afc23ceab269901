"""`unipgen fit` and `unipgen recommend`: a fit as a job, its history, ranked unseen items with reasons."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import as_json, run
from tests.conftest import SAMPLE


def test_fit_then_recommend(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run(home, "ingest", "movielens", str(SAMPLE), "--users", "4")
    before = as_json(run(home, "recommend", "2", "-k", "3", "--json"))
    assert before["space"] == "text" and len(before["items"]) == 3
    fitted = as_json(run(home, "fit", "--set", "dim=3", "--json"))
    assert fitted["status"] == "succeeded" and fitted["fit"]["generation"] == 1
    assert fitted["fit"]["config"]["dim"] == 3 and fitted["fit"]["stats"]["users"] == 4
    after = as_json(run(home, "recommend", "2", "-k", "4", "--diversity", "0.3", "--json"))
    assert after["space"] == "behavior" and after["fit_generation"] == 1 and len(after["items"]) == 4
    assert all(item["reasons"] for item in after["items"])
    rated = {e["item"] for e in as_json(run(home, "events", "list", "2", "--json"))["events"]}
    assert not rated & {item["item"] for item in after["items"]}
    text = run(home, "recommend", "2", "-k", "2").stdout
    assert "from the behavior space, fit 1" in text and "because:" in text
    history = as_json(run(home, "fit", "--history", "--json"))
    assert [f["generation"] for f in history["fits"]] == [1] and "popular" not in history["fits"][0]["stats"]


def test_bad_settings_are_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run(home, "ingest", "movielens", str(SAMPLE), "--users", "2")
    done = run(home, "fit", "--set", "dims=3", ok=False)
    assert done.returncode == 2 and "unknown FitConfig fields: ['dims']" in done.stderr
    done = run(home, "fit", "--set", "dim", ok=False)
    assert done.returncode == 2 and "expected KEY=VALUE" in done.stderr
    done = run(home, "recommend", "nobody", ok=False)
    assert done.returncode == 2 and "unknown user 'nobody'" in done.stderr
