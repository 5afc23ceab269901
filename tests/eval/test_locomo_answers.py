"""LoCoMo's answer F1 against hand-computed values, and answers through the product in the harness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.eval.test_locomo import encoder, tiny_sample, write_samples  # noqa: F401  (the module's encoder fixture)
from unipgen.eval.locomo import run_locomo
from unipgen.eval.locomo_answers import locomo_f1, normalize_answer, token_f1


def test_normalisation_drops_commas_articles_and_punctuation() -> None:
    assert normalize_answer("The Blue, bowl and a cup!") == "blue bowl cup"


def test_token_f1_stems_and_counts_overlap() -> None:
    assert token_f1("painted sunrises", "a sunrise painting") == 1.0  # stems: paint, sunris
    assert token_f1("painted sunrises", "a sunrise painting on canvas") == pytest.approx(2 / 3)  # P 1, R 1/2
    assert token_f1("Daisy", "daisy") == 1.0 and token_f1("", "daisy") == 0.0 and token_f1("cat", "dog") == 0.0


def test_multi_hop_scores_each_gold_part_against_its_best_predicted_part() -> None:
    # gold parts "pottery" (matched) and "camping" (not): the mean of 1 and 0
    assert locomo_f1("pottery, swimming", "pottery, camping", 1) == pytest.approx(0.5)
    assert locomo_f1("7 May 2023", "7 May 2023; the week before", 3) == 1.0  # category 3: up to the first ";"


def test_the_harness_answers_through_the_product(tmp_path: Path, encoder: Any) -> None:  # noqa: F811
    data = write_samples(tmp_path / "tiny.json", [tiny_sample()])
    result = run_locomo(data, encoder=encoder, answers=2, profile="tiny", out=tmp_path / "report")
    answers = result["answers"]
    assert answers["profile"] == "tiny" and answers["questions"] == 2
    assert all(0.0 <= row["f1"] <= 1.0 and row["gold"] for row in answers["examples"])
    assert 0.0 <= answers["f1"]["all"] <= 1.0
    report = (tmp_path / "report" / "locomo.md").read_text()
    assert "Answers (LoCoMo token F1)" in report
    assert answers["score_kind"] == "mechanical check" and "These F1 are a mechanical check" in report  # tiny LM
