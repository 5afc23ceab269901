"""The command line contract: `--json` prints one JSON object; errors exit 2 and name the problem."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import CHROMEDRIVER, CHROMIUM, assert_page_loads
from tests.conftest import SAMPLE


def run(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "UNIPGEN_HOME": str(home)}
    done = subprocess.run([sys.executable, "-m", "unipgen.cli", *args], capture_output=True, text=True, env=env)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def as_json(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout)


def test_ingest_show_export_import_forget(tmp_path: Path) -> None:
    home = tmp_path / "home"
    loaded = as_json(run(home, "ingest", "movielens", str(SAMPLE), "--users", "3", "--json"))
    assert loaded == {"tenant": "default", "items_added": 828, "users_added": 3, "users_skipped": 0,
                      "events_added": 232 + 29 + 39, "documents_added": 9}
    again = as_json(run(home, "ingest", "movielens", str(SAMPLE), "--users", "3", "--json"))
    assert again["events_added"] == 0 and again["users_skipped"] == 3
    assert as_json(run(home, "users", "list", "--json"))["users"] == ["1", "2", "3"]
    shown = as_json(run(home, "users", "show", "2", "--json"))
    assert shown["counts"]["behavior_events"] == 29 and len(shown["top_items"]) == 5
    assert shown["counts"]["documents"] == 9  # user 2's tags
    archive = tmp_path / "u2.zip"
    run(home, "users", "export", "2", "-o", str(archive), "--json")
    forgot = as_json(run(home, "users", "forget", "2", "--json"))
    assert forgot["residue"] == [] and forgot["deleted"]["events"] == 29
    assert as_json(run(home, "users", "import", str(archive), "--json")) == {"tenant": "default", "user": "2"}
    assert as_json(run(home, "users", "show", "2", "--json"))["counts"]["behavior_events"] == 29


@pytest.mark.parametrize(
    "args, code, message",
    [
        (("users", "show", "nobody", "--json"), "not_found", "unknown user 'nobody'"),
        (("users", "list", "--tenant", "ghost", "--json"), "not_found", "unknown tenant 'ghost'"),
        (("ingest", "movielens", "/nonexistent", "--json"), "invalid_input", "movies.csv not found"),
    ],
)
def test_errors_are_json_with_a_stable_code(tmp_path: Path, args, code, message) -> None:
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "1")
    done = run(tmp_path, *args, ok=False)
    assert done.returncode == 2
    error = as_json(done)["error"]
    assert error["code"] == code and message in error["message"]


def test_malformed_import_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_text("{not a zip")
    done = run(tmp_path, "users", "import", str(bad), ok=False)
    assert done.returncode == 2 and "bad.zip is not a readable unipgen export" in done.stderr


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    done = run(tmp_path, "demo", "--report", str(tmp_path / "report"))
    assert "identical bytes" in done.stdout and "behavior fit 1 is stale" in done.stdout  # the fit read their ratings
    assert "ran the queued refit (1 job): fit 2 from 7 users; residue now: none" in done.stdout
    assert "might enjoy next (behavior space, fit 1" in done.stdout and "recommended in the prompt" in done.stdout
    assert "5. generated for user 2" in done.stdout and "artifacts" in done.stdout
    for modality in ("text", "image", "video", "audio", "speech", "3d"):  # one output per modality
        assert f"     {modality} (" in done.stdout, modality
    index = tmp_path / "report" / "index.html"
    page = index.read_text()
    assert page.count("Not personalized") >= 7 and "speaker_similarity" in page
    # the tiny CLIP's scores beside noise images read as mechanical checks, never as quality figures
    assert re.search(r"<th>clip_i</th><td><span class=\"mechanical\"[^>]*>[-0-9.]+ \(mechanical check: random weights\)",
                     page) and "computed with random-weight models" in page
    assert "clip i " in done.stdout and "(mechanical check: random weights)" in done.stdout
    assets = [tmp_path / "report" / link for link in re.findall(r'(?:src|href)="(assets/[^"]+)"', page)]
    assert assets and all(path.is_file() for path in assets)
    if CHROMIUM and CHROMEDRIVER:  # the real demo page in a browser: every image, player and link works
        state = assert_page_loads(index)
        assert len(state["media"]) >= 5  # their voice, and per pair: video, music and speech players


def test_the_demo_keeps_its_store_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment's database, bucket and index folder in the environment are not the demo's:
    it loads, forgets and deletes data, and reads its outputs as local files."""
    from unipgen.demo import sandbox_settings

    monkeypatch.setenv("UNIPGEN_DATABASE_URL", "postgresql+psycopg://unipgen@db.internal/prod")
    monkeypatch.setenv("UNIPGEN_BLOB_URL", "s3://prod-bucket/blobs")
    monkeypatch.setenv("UNIPGEN_INDEX_DIR", str(tmp_path / "prod-indexes"))
    settings = sandbox_settings(tmp_path / "demo")
    assert settings.database_url is None and settings.index_dir is None
    assert settings.resolved_blob_url() == (tmp_path / "demo" / "blobs").as_posix()


def test_help_does_not_import_heavy_modules() -> None:
    code = "import sys, unipgen.cli; print(sorted(m for m in ('torch','faiss','numpy','sqlalchemy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_context_command_prints_context_and_plan(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    home = tmp_path / "home"
    run(home, "ingest", "movielens", str(SAMPLE), "--users", "2")
    done = run(home, "context", "2", "--modality", "image", "--instruction", "a sunset over the sea", "--json")
    payload = as_json(done)
    assert payload["plan"]["method"] == "prompt_only"
    assert payload["plan"]["prompt"].startswith("a sunset over the sea, ")
    keywords = payload["context"]["preferences"][0]["positive_keywords"]
    assert len(keywords) == 8 and payload["context"]["preferences"][0]["long_term"] is None
    assert "embedded 837 catalog items and documents" in done.stderr  # 828 movies, 9 tags of user 2


@pytest.mark.parametrize(
    "args, message",
    [
        (("context", "2", "-m", "smell", "-i", "x"), "unknown modality 'smell'"),
        (("context", "2", "-m", "text", "-i", "  "), "--instruction is empty"),
        (("context", "nobody", "-m", "text", "-i", "hi"), "unknown user 'nobody'"),
        (("context", "2", "-m", "text", "-i", "hi", "--profile", "huge"), "unknown model profile 'huge'"),
    ],
)
def test_context_bad_input(tmp_path: Path, args, message) -> None:  # noqa: ANN001
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "2")
    done = run(tmp_path, *args, "--json", ok=False)
    assert done.returncode == 2 and message in as_json(done)["error"]["message"]


def test_generate_music_and_3d_from_the_command_line(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "2")
    music = as_json(run(tmp_path, "generate", "2", "-m", "music", "-i", "music for my evening", "--json"))
    assert music["plan"]["method"] == "prompt_only" and music["artifacts"][0]["media_type"] == "audio/wav"
    mesh, preview = as_json(run(tmp_path, "generate", "2", "-m", "3d", "-i", "a red toy robot", "--json"))["artifacts"]
    assert (mesh["media_type"], preview["media_type"]) == ("model/gltf-binary", "image/png")
    assert Path(mesh["path"]).read_bytes()[:4] == b"glTF"
    humming = run(tmp_path, "generate", "2", "-m", "music", "-i", "music", "--melody", "humming", "--json", ok=False)
    assert humming.returncode == 2 and "no voice recording 'humming'" in as_json(humming)["error"]["message"]


def test_a_multi_modal_post_from_the_command_line(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "2")
    post = as_json(run(tmp_path, "generate", "2", "-m", "text,image", "-i", "my film night", "--seed", "3", "--json"))
    assert post["status"] == "succeeded" and post["modalities"] == ["text", "image"]
    assert post["group"].startswith("post-") and post["plan"]["modality"] == "image"
    assert set(post["plans"]) == {"text", "image"} and post["caption"]
    assert post["score_kinds"] == {"consistency": "mechanical check"} and isinstance(post["consistency"], float)
    shapes = {a["modality"]: a["media_type"] for a in post["artifacts"]}
    assert shapes == {"image": "image/png", "text": "text/plain; charset=utf-8"}
    assert all(Path(a["path"]).is_file() for a in post["artifacts"])
    jobs = as_json(run(tmp_path, "jobs", "list", "--json"))["jobs"]
    for bad, says in [("text,text", "'text' asked more than once"), ("text,painting", "unknown modality 'painting'")]:
        refused = run(tmp_path, "generate", "2", "-m", bad, "-i", "my film night", "--json", ok=False)
        assert refused.returncode == 2 and says in as_json(refused)["error"]["message"]
    refused = run(tmp_path, "generate", "2", "-m", "text,image", "-i", "x", "--best-of", "2", "--json", ok=False)
    assert refused.returncode == 2 and "best_of applies to one modality" in as_json(refused)["error"]["message"]
    assert as_json(run(tmp_path, "jobs", "list", "--json"))["jobs"] == jobs  # nothing was queued


def test_best_of_options_that_do_not_go_together_are_refused(tmp_path: Path) -> None:
    refused = run(tmp_path, "generate", "2", "-i", "a film", "-n", "16", "--best-of", "4", "--json", ok=False)
    assert refused.returncode == 2
    assert "16 = 64 candidates; at most 32" in as_json(refused)["error"]["message"]


@pytest.mark.slow
def test_generate_best_of_from_the_command_line(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "2")
    every = as_json(run(tmp_path, "generate", "2", "-m", "music", "-i", "music for my evening", "--best-of", "2",
                        "--keep-all", "--json"))["artifacts"]
    assert len(every) == 2 and len({Path(a["path"]).read_bytes() for a in every}) == 2
    [best] = as_json(run(tmp_path, "generate", "2", "-m", "music", "-i", "music for my evening", "--best-of", "2",
                         "--json"))["artifacts"]
    assert best["blob_sha"] == every[0]["blob_sha"]  # the first of "all" is the best


def test_eval_harness_writes_its_report(tmp_path: Path) -> None:
    from unipgen.eval.environment import shared_data_dir

    faces = shared_data_dir() / "orl-faces"
    if not faces.is_dir():
        pytest.skip(f"{faces} is absent (CI has ../shared/data)")
    result = as_json(run(tmp_path, "eval", "faces", "--data", str(faces), "--quick", "--profile", "cpu",
                         "--out", str(tmp_path / "r"), "--json"))
    assert result["settings"]["profile"] == "cpu"
    assert result["face_pair_auc"] > result["face_pair_auc_pixels"]
    assert {Path(path).name for path in result["report"].values()} >= {"faces.json", "faces.html"}
    missing = run(tmp_path, "eval", "voice", "--data", str(tmp_path / "nowhere"), "--json", ok=False)
    assert missing.returncode == 2 and "nowhere" in as_json(missing)["error"]["message"]


def test_train_text_lora_from_the_command_line(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "2")
    trained = as_json(run(tmp_path, "train", "2", "--method", "text-lora", "--steps", "3", "--json"))
    assert trained["artifact"].startswith("text-lora-") and len(trained["losses"]) == 3
    done = run(tmp_path, "train", "1", "--method", "text-lora", "--json", ok=False)
    assert done.returncode == 2 and "has no documents" in as_json(done)["error"]["message"]


def test_feedback_then_dpo_from_the_command_line(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "2")
    made = as_json(run(tmp_path, "generate", "2", "-i", "Recommend a film", "-n", "2", "--json"))["artifacts"]
    first, second = (a["key"] for a in made)
    chosen = as_json(run(tmp_path, "feedback", "2", first, "--over", second, "--json"))
    assert chosen == {"tenant": "default", "user": "2", "type": "pairwise", "output": first, "rejected": second}
    assert Path(made[0]["path"]).read_bytes() != Path(made[1]["path"]).read_bytes()  # seeds 0 and 1 differ
    trained = as_json(run(tmp_path, "train", "2", "--method", "dpo", "--steps", "2", "--json"))
    assert trained["artifact"].startswith("dpo-") and len(trained["losses"]) == 2
    both = run(tmp_path, "feedback", "2", first, "--up", "--down", "--json", ok=False)
    assert both.returncode == 2 and "exactly one of --up, --down or --over" in as_json(both)["error"]["message"]
    unknown = run(tmp_path, "feedback", "2", "nope", "--up", "--json", ok=False)
    assert unknown.returncode == 2 and "no output 'nope'" in as_json(unknown)["error"]["message"]


def test_jobs_queue_run_by_a_worker_and_idempotent_by_id(tmp_path: Path) -> None:
    run(tmp_path, "ingest", "movielens", str(SAMPLE), "--users", "2")
    queued = as_json(run(tmp_path, "generate", "2", "-i", "Recommend a film", "--job-id", "j1", "--no-wait", "--json"))
    assert queued["job"] == "j1" and queued["status"] == "queued" and queued["artifacts"] == []
    listed = as_json(run(tmp_path, "jobs", "list", "--status", "queued", "--json"))["jobs"]
    assert [j["key"] for j in listed] == ["j1"]
    ran = as_json(run(tmp_path, "worker", "--once", "--json"))
    assert [(j["key"], j["status"]) for j in ran["jobs"]] == [("j1", "succeeded")]
    again = as_json(run(tmp_path, "generate", "2", "-i", "Recommend a film", "--job-id", "j1", "--json"))
    shown = as_json(run(tmp_path, "jobs", "show", "j1", "--json"))
    assert again["status"] == "succeeded" and [a["key"] for a in again["artifacts"]] == shown["result"]["artifacts"]
    other = run(tmp_path, "generate", "2", "-i", "Something else", "--job-id", "j1", "--json", ok=False)
    assert other.returncode == 2 and "job 'j1' exists with a different request" in as_json(other)["error"]["message"]
    late = run(tmp_path, "jobs", "cancel", "j1", "--json", ok=False)
    assert late.returncode == 2 and "has already succeeded" in as_json(late)["error"]["message"]
