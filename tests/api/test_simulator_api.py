"""The user simulator through the service and the SDK: judgements of two candidates, and
synthetic pairwise preferences between the user's text outputs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.conftest import Live
from unipgen.client import Client
from unipgen.errors import InvalidInputError, NotFoundError

ITEMS = [{"key": "boxing", "text": "Warrior (2011) drama about two brothers who fight in the ring"},
         {"key": "ring", "text": "Rocky (1976) boxing drama about a fighter from Philadelphia"},
         {"key": "toys", "text": "Toy Story (1995) animation adventure comedy with toys"}]


@pytest.fixture(scope="module")
def api(live: Live) -> Iterator[Client]:
    with live.client() as client:
        client.add_items(ITEMS)
        client.create_user("sim")
        client.add_events([{"user": "sim", "type": "rate", "item": "boxing", "value": 5, "ts": 1_700_000_000}])
        yield client


def test_judgement_prefers_the_item_like_what_the_user_liked(api: Client) -> None:
    judged = api.judge("sim", "toys", "ring")
    assert judged.decided and judged.preferred.key == "ring" and judged.rejected.key == "toys"
    assert judged.margin > 0 and judged.reasons[0].item == "boxing"


def test_bad_judgements_are_named(api: Client) -> None:
    with pytest.raises(NotFoundError, match="nobody"):
        api.judge("nobody", "toys", "ring")
    with pytest.raises(NotFoundError, match="nope"):
        api.judge("sim", "toys", "nope")
    with pytest.raises(InvalidInputError, match="twice|same"):
        api.judge("sim", "toys", "toys")


def test_synthetic_preferences_between_outputs_are_marked(api: Client) -> None:
    job = api.wait(api.generate("sim", "text", "Describe a film night.",
                                options={"num_outputs": 2, "max_new_tokens": 8}).key)
    assert job.status == "succeeded"
    rows = api.record_preferences("sim")
    assert len(rows) <= 1 and all(r.type == "pairwise" and r.meta["synthetic"] for r in rows)
    assert {r.output for r in rows} | {r.rejected for r in rows} <= set(job.result["artifacts"])
    assert api.record_preferences("sim") == []  # judged pairs are not judged again
    with pytest.raises(InvalidInputError, match="catalog item"):
        api.record_preferences("sim", [("toys", "ring")])
