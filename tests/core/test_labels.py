"""The user model's part in labels / scale answers (`core.labels`, `core.label_plan`), by hand:
the recency prior, the neighbours' vote, the per-user mix fitted leave-one-out (a habit gets the
prior, answers that follow the items get the neighbours, the model wins where it is right), the
weighted median of a scale, the sources' shares, and the prompts a plan asks the model to score."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unipgen.core import label_plan, labels
from unipgen.core.label_plan import HistoryItem, Question, Settings
from unipgen.core.labels import Item, LabelConfig, Mix, Row

CONFIG = LabelConfig(half_life=2.0, smoothing=1.0, neighbours_k=2, fit_items=4, grid=10, shrink=0.0)


def test_prior_weighs_recent_answers_more() -> None:
    items = [Item("a", (0,)), Item("b", (0,)), Item("c", (1,))]  # weights 0.5, 0.7071, 1 (half-life 2)
    found = labels.prior(items, 3, CONFIG)
    weights = [0.5 ** (2 / 2), 0.5 ** (1 / 2), 1.0]
    total = sum(weights) + 1.0
    assert found == pytest.approx([(weights[0] + weights[1] + 1 / 3) / total, (1 + 1 / 3) / total, (1 / 3) / total])
    assert labels.prior(items, 3, LabelConfig(half_life=None, smoothing=0.0)) == pytest.approx([2 / 3, 1 / 3, 0])
    skipped = labels.prior(items, 3, LabelConfig(half_life=None, smoothing=0.0), skip=2)  # leave-one-out
    assert skipped == pytest.approx([1, 0, 0])


def test_an_item_with_two_answers_splits_its_weight() -> None:
    found = labels.prior([Item("a", (0, 2))], 3, LabelConfig(half_life=None, smoothing=0.0))
    assert found == pytest.approx([0.5, 0, 0.5])


def test_vote_weighs_neighbours_by_score_and_counts_items() -> None:
    found = labels.vote([(Item("a", (0,)), 0.03), (Item("b", (1,)), 0.01)], 2, LabelConfig(smoothing=2.0))
    # votes 0.75 / 0.25 of 2 items = 1.5 / 0.5, plus 1 pseudo-answer each, over 4
    assert found == pytest.approx([2.5 / 4, 1.5 / 4])
    assert labels.vote([], 4, CONFIG) == pytest.approx([0.25] * 4)


def test_model_distribution_is_the_softmax_of_the_sums() -> None:
    found = labels.model_distribution([math.log(1), math.log(3)])
    assert found == pytest.approx([0.25, 0.75])


def _rows(model_right: bool, prior_right: bool, neighbours_right: bool, count: int = 6) -> list[Row]:
    """Rows where each source puts 0.8 on the gold (answer 0) when it is right, on answer 1 otherwise."""
    def source(right: bool) -> np.ndarray:
        return np.array([0.8, 0.2]) if right else np.array([0.2, 0.8])
    return [Row(source(model_right), source(prior_right), source(neighbours_right), (0,)) for _ in range(count)]


@pytest.mark.parametrize(("right", "winner"), [((True, False, False), 0), ((False, True, False), 1),
                                               ((False, False, True), 2)])
def test_the_fit_gives_the_weight_to_the_source_that_is_right(right: tuple[bool, bool, bool], winner: int) -> None:
    mix = labels.fit(_rows(*right), CONFIG)
    assert mix.weights[winner] == pytest.approx(1.0) and mix.fitted_on == 6
    assert mix.loo_loglik == pytest.approx(math.log(0.8), abs=1e-4)


def test_shrink_pulls_a_short_history_toward_an_even_split() -> None:
    mix = labels.fit(_rows(False, True, False, count=2), LabelConfig(shrink=2.0))
    # fitted (0, 1, 0) on 2 items, plus 2 pseudo-items of (1/3, 1/3, 1/3): (2/3, 2 + 2/3, 2/3) / 4
    assert mix.weights == pytest.approx((1 / 6, 2 / 3, 1 / 6))
    assert labels.fit([], CONFIG).weights == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    no_model = labels.fit(_rows(False, False, True), CONFIG, with_model=False)
    assert no_model.weights == pytest.approx((0, 0, 1))


def test_decide_takes_the_likeliest_and_says_where_it_came_from() -> None:
    row = Row(np.array([0.6, 0.4]), np.array([0.1, 0.9]), np.array([0.5, 0.5]))
    decision = labels.decide(row, Mix((0.5, 0.25, 0.25), 3))
    mixed = [0.5 * 0.6 + 0.25 * 0.1 + 0.25 * 0.5, 0.5 * 0.4 + 0.25 * 0.9 + 0.25 * 0.5]  # 0.45, 0.55
    assert decision.answer == 1 and decision.probabilities == pytest.approx(mixed)
    assert decision.shares == pytest.approx({"model": 0.2 / 0.55, "prior": 0.225 / 0.55, "neighbours": 0.125 / 0.55},
                                            abs=1e-4)
    assert sum(decision.shares.values()) == pytest.approx(1.0, abs=1e-3)
    meta = decision.meta(["no", "yes"])
    assert meta["answer"] == "yes" and meta["source_answers"] == {"model": "no", "prior": "yes", "neighbours": "no"}


def test_a_scale_takes_the_weighted_median() -> None:
    assert labels.weighted_median(np.array([0.3, 0.1, 0.05, 0.15, 0.4])) == 3  # cumulative 0.3 .4 .45 .6
    row = Row(np.array([0.3, 0.1, 0.05, 0.15, 0.4]), np.full(5, 0.2), np.full(5, 0.2))
    assert labels.decide(row, Mix((1.0, 0.0, 0.0), 0), ordinal=True).answer == 3
    assert labels.decide(row, Mix((1.0, 0.0, 0.0), 0)).answer == 4  # labels: the likeliest


def test_simplex_grid() -> None:
    points = labels.simplex(10)
    assert len(points) == 66 and all(sum(p) == pytest.approx(1) for p in points)
    assert all(p[0] == 0 for p in labels.simplex(4, with_model=False)) and len(labels.simplex(4, False)) == 5


# -- plans ---------------------------------------------------------------------------------------

HISTORY = [HistoryItem(f"item:{i}", text, (answer,)) for i, (text, answer) in enumerate([
    ("space rockets to mars", 0), ("a rocket crash on the moon", 0), ("a sad farewell at the station", 1),
    ("family quarrel at dinner", 1), ("mars colony rockets", 0)])]


def test_a_mixed_plan_scores_the_question_and_each_recent_item_without_itself() -> None:
    settings = Settings(mode="mixed", examples_k=2, example_format="pairs", answer_name="label", config=CONFIG)
    plan = label_plan.plan(HISTORY, Question("rockets over mars", "Q: rockets over mars"), ["space", "drama"],
                           False, lambda text: f"Q: {text}", settings)
    assert len(plan.prompts) == 1 + 4 and len(plan.rows) == 5  # the question, then the latest 4 items
    assert plan.prompts[0].endswith("Q: rockets over mars") and plan.examples[0] in {"item:0", "item:4"}
    assert "item: mars colony rockets\nlabel: space" in plan.prompts[0]
    for prompt, item in zip(plan.prompts[1:], HISTORY[1:], strict=True):  # leave-one-out: never its own answer
        assert prompt.endswith(f"Q: {item.text}") and f"item: {item.text}\n" not in prompt
    assert [row.golds for row in plan.rows[1:]] == [(0,), (1,), (1,), (0,)]
    decision = label_plan.finish(plan, [[0.0, -5.0]] * 5)  # the model always says "space"
    assert decision.answer == 0 and decision.mix.fitted_on == 4


def test_model_and_user_plans() -> None:
    model = label_plan.plan(HISTORY, Question("x", "Q: x"), ["a", "b"], False, str,
                            Settings(mode="model", examples_k=0, config=CONFIG))
    assert model.prompts == ["Q: x"] and len(model.rows) == 1
    assert label_plan.finish(model, [[-3.0, -1.0]]).shares == {"model": 1.0, "prior": 0.0, "neighbours": 0.0}
    user = label_plan.plan(HISTORY, Question("rockets", "Q"), ["a", "b"], False, str,
                           Settings(mode="user", config=CONFIG))
    assert user.prompts == [] and label_plan.finish(user, []).mix.weights[0] == 0.0
    with pytest.raises(ValueError, match="1 prompts scored but 2 results"):
        label_plan.finish(model, [[0.0, 0.0]] * 2)


def test_example_formats() -> None:
    examples = [("near", "x"), ("far", "y")]  # nearest first, as retrieved: written nearest last
    lamp = Settings(example_format="lamp", answer_name="tag", item_name="movie")
    assert label_plan.with_examples("Q?", examples, lamp) == 'the tag for "far" is "y", and the tag for "near" ' \
                                                             'is "x". Q?'
    pairs = Settings(example_format="pairs", answer_name="tag", item_name="movie")
    assert label_plan.with_examples("Q?", examples, pairs) == \
        "Tags this user gave to similar movies:\nmovie: far\ntag: y\nmovie: near\ntag: x\n\nQ?"
    assert label_plan.with_examples("Q?", [], pairs) == "Q?"


def test_question_wordings() -> None:
    assert label_plan.question_template(["1", "2", "3"], True) == (
        "What is the score of the following item on a scale of 1 to 3? Just answer with 1, 2, or 3 without "
        "further explanation. item: {text}")
    assert "labels: [a, b] item: {text}" in label_plan.question_template(["a", "b"], False)
    assert label_plan.instruction_prompt("Rate it ", ["1", "2"], True) == \
        "Rate it\nJust answer with 1 or 2 without further explanation."
