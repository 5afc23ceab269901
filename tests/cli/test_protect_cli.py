"""Protection and consent to training from the command line: a subject uploaded with --protect
gets protected copies, `unipgen protect` protects again, and training on the subject is refused
(exit 2, `consent_required`) until `users consent --training`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

from tests.cli.test_cli import as_json, run  # noqa: E402
from tests.conftest import SAMPLE  # noqa: E402
from tests.helpers import photo_png  # noqa: E402

QUICK = {"UNIPGEN_PROTECT_ROUNDS": "1", "UNIPGEN_PROTECT_PGD_STEPS": "1", "UNIPGEN_PROTECT_SURROGATE_STEPS": "0"}


def test_protect_and_consent_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in QUICK.items():  # one quick round: the budget is the settings'
        monkeypatch.setitem(os.environ, name, value)
    home = tmp_path / "home"
    run(home, "ingest", "movielens", str(SAMPLE), "--users", "1")
    photos = []
    for n in range(2):
        photos.append(tmp_path / f"rex-{n}.png")
        photos[-1].write_bytes(photo_png(40 + n, (64, 48)))
    added = as_json(run(home, "users", "add-subject", "1", "rex", *map(str, photos), "--class-noun", "dog",
                        "--protect", "--json"))
    assert added["images"] == 2 and added["protection"]["status"] == "succeeded"
    assert len(added["protection"]["artifacts"]) == 2 and min(added["protection"]["psnr"]) >= 36.0
    again = as_json(run(home, "protect", "1", "--subject", "rex", "--seed", "1", "--json"))
    assert again["protects"] == "subject:rex" and len(again["artifacts"]) == 2
    assert all(Path(copy["path"]).read_bytes().startswith(b"\x89PNG") for copy in again["artifacts"])
    assert as_json(run(home, "users", "consent", "1", "--json"))["granted"] is False
    refused = run(home, "train", "1", "--method", "lora", "--subject", "rex", "--no-wait", "--json", ok=False)
    assert refused.returncode == 2 and as_json(refused)["error"]["code"] == "consent_required"
    assert as_json(run(home, "users", "consent", "1", "--training", "--json"))["granted"] is True
    assert as_json(run(home, "users", "show", "1", "--json"))["training_consent_at"] is not None
    missing = run(home, "protect", "1", "--json", ok=False)
    assert as_json(missing)["error"]["code"] == "invalid_input"
