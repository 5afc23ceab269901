"""Recommendations and fits through the service and the SDK (sync and async), on SQLite and PostgreSQL:
text space before a fit, the behavior space after one, a forget that leaves the fit stale until the
service's worker has run the refit it queued."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.api.conftest import Live
from unipgen.client import AsyncClient, Client
from unipgen.errors import InvalidInputError, NotFoundError

GENRES = {"war": ["tanks", "soldiers", "battle"], "cook": ["pasta", "bread", "soup"], "space": ["rockets", "planets", "stars"]}


@pytest.fixture(scope="module")
def api(live: Live) -> Client:
    with live.client() as client:
        client.add_items([{"key": f"{g}{n}", "text": f"a film about {w}", "meta": {"kind": g}}
                          for g, words in GENRES.items() for n, w in enumerate(words)])
        events = [{"user": f"u{u}", "type": "rate", "item": f"{list(GENRES)[u % 3]}{n}", "value": 5, "ts": 1_700_000_000 + u * 100 + n}
                  for u in range(9) for n in range(3) if (u + n) % 3 != 2]
        client.add_events(events, create_users=True)
        yield client


def _wait_for(check: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the service's worker did not run the job in time"
        time.sleep(0.1)


def test_recommendations_before_and_after_a_fit(api: Client) -> None:
    with pytest.raises(NotFoundError, match="no fit yet"):
        api.current_fit()
    before = api.recommend("u0", k=2)
    assert before.space == "text" and len(before.items) == 2
    job = api.fit(config={"dim": 2}, job_id="fit-1")
    assert job.kind == "fit" and job.user is None
    assert api.wait("fit-1").status == "succeeded"
    fit = api.current_fit()
    assert fit.generation == 1 and fit.stats["users"] == 9 and fit.config["dim"] == 2
    after = api.recommend("u0", k=3, diversity=0.5)
    assert after.space == "behavior" and after.fit_generation == 1 and after.diversity == 0.5
    assert after.items[0].item.startswith("war") and after.items[0].reasons
    assert {i.item[:4] for i in api.recommend("u0", k=5, kind="cook").items} == {"cook"}
    seen = {e.item for e in api.events("u0")}
    assert seen <= {i.item for i in api.recommend("u0", k=9, include_seen=True).items}
    context = api.context("u0", "text", "recommend me a film for tonight")
    assert [k.text for k in context.preferences[0].top_items] == [i.text for i in context.recommendations.items]


def test_forget_leaves_the_fit_stale_until_the_queued_refit_ran(api: Client) -> None:
    if not any(f.status == "current" for f in api.fits()):
        api.wait(api.fit(config={"dim": 2}).key)
    generation = api.current_fit().generation
    report = api.forget_user("u8")
    assert any("is stale" in r for r in report.residue)
    _wait_for(lambda: api.current_fit().status == "current" and api.current_fit().generation == generation + 1)
    assert api.current_fit().stats["users"] == 8
    assert [f.status for f in api.fits()][:2] == ["current", "replaced"]


def test_bad_requests_name_what_is_wrong(api: Client) -> None:
    with pytest.raises(InvalidInputError, match="k"):
        api.recommend("u0", k=0)
    with pytest.raises(InvalidInputError, match="diversity"):
        api.recommend("u0", diversity=2)
    with pytest.raises(NotFoundError, match="unknown user 'ghost'"):
        api.recommend("ghost")
    with pytest.raises(InvalidInputError, match="unknown FitConfig fields"):
        api.fit(config={"dims": 3})


def test_the_async_client_recommends(live: Live) -> None:
    async def main() -> tuple[str, int]:
        async with AsyncClient(live.url, api_key=live.key) as client:
            found = await client.recommend("u1", k=2)
            return found.space, len(found.items)

    space, count = asyncio.run(main())
    assert space in {"text", "behavior"} and count == 2
