"""Fits of the behavior space in the store: versions, lineage, staleness on forget, the refit policy,
and the proof that a refit after a forget equals a fit that never saw the forgotten user."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from unipgen.core.usermodel import UserModel
from unipgen.memory import MemoryStore
from unipgen.memory.models import BehaviorFit, Lineage
from unipgen.orchestrator import InlineExecutor
from unipgen.settings import Settings

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
ITEMS = [{"key": f"i{n}", "text": f"item number {n} about {['boats', 'cakes', 'stars'][n % 3]}"} for n in range(12)]


def _events(users: list[str]) -> list[dict]:
    events = []
    for u, user in enumerate(users):
        for n in range(12):
            if (n + u) % 3 == 0 or (n * u) % 5 == 1:
                events.append({"user": user, "type": "rate", "item": f"i{n}", "value": 1.0 + (n + u) % 5,
                               "ts": T0 + timedelta(hours=u * 20 + n)})
    return events


def _tenant(store: MemoryStore, tmp_path: Path, users: list[str]) -> UserModel:
    store.users.create_tenant("t")
    model = UserModel(store, "tiny", cache_dir=tmp_path / "cache")
    model.add_items("t", ITEMS)
    store.events.ingest_events("t", _events(users), create_users=True)
    return model


USERS = [f"u{n}" for n in range(8)]


def test_a_fit_is_stored_versioned_and_derived_from_its_users(store: MemoryStore, tmp_path: Path) -> None:
    model = _tenant(store, tmp_path, USERS)
    first = model.fit("t", {"dim": 3})
    assert first.status == "current" and first.stats["users"] == 8 and first.config["dim"] == 3
    vectors = store.content.vectors("t", "behavior", "item")
    assert sorted(vectors) == sorted(i["key"] for i in ITEMS) and store.content.spaces("t")["behavior"][0] == 3 + store.content.spaces("t")["text"][0]
    second = model.fit("t", {"dim": 2})
    assert second.generation == 2 and store.content.spaces("t")["behavior"][0] == 2 + store.content.spaces("t")["text"][0]  # the width follows the fit
    assert [(f.generation, f.status) for f in store.fits.fits("t")] == [(2, "current"), (1, "replaced")]
    with store.session() as session:
        rows = {r.generation: r for r in session.scalars(select(BehaviorFit))}
        assert rows[1].mapping is None and rows[2].mapping is not None  # history keeps settings only
        edges = session.scalar(select(func.count()).select_from(Lineage).where(Lineage.derived_kind == "fit"))
    assert edges == 8  # fit 2 <- each user; fit 1's edges went with it
    assert store.fits.current_fit("t").events_since == 0
    store.events.ingest_events("t", [{"user": "u0", "type": "like", "item": "i5", "ts": T0}])
    assert store.fits.current_fit("t").events_since == 1


def test_forget_marks_the_fit_stale_and_queues_a_refit_that_equals_a_fit_without_the_user(
        store: MemoryStore, tmp_path: Path) -> None:
    model = _tenant(store, tmp_path, USERS)
    model.fit("t", {"dim": 3})
    report = store.privacy.forget_user("t", "u3")
    assert any("behavior fit 1 is stale" in r for r in report.residue)
    assert store.fits.current_fit("t").status == "stale" and "u3" in store.fits.current_fit("t").stale_reason
    assert model.recommend("t", "u0").stale
    [job] = store.jobs.jobs("t", status="queued")
    assert job.kind == "fit" and job.user is None
    done = InlineExecutor(model).run_pending()
    assert [j.status for j in done] == ["succeeded"] and done[0].result["stats"]["users"] == 7
    assert store.fits.current_fit("t").status == "current" and store.fits.current_fit("t").generation == 2

    with MemoryStore.open(Settings(home=tmp_path / "never")) as clean:  # the same data, u3 never there
        other = _tenant(clean, tmp_path, USERS)
        clean.privacy.forget_user("t", "u3")  # before any fit: nothing goes stale, nothing is queued
        assert clean.jobs.jobs("t") == [] and clean.fits.current_fit("t") is None
        other.fit("t", {"dim": 3})
        expected = clean.content.vectors("t", "behavior", "item")
    refit = store.content.vectors("t", "behavior", "item")
    assert sorted(refit) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(refit[key], expected[key], rtol=1e-4, atol=1e-5)


def test_deleting_events_or_an_item_with_events_marks_the_fit_stale(store: MemoryStore, tmp_path: Path) -> None:
    model = _tenant(store, tmp_path, USERS)
    model.fit("t", {"dim": 3})
    store.users.create_user("t", "quiet")  # a user the fit never read: forgetting them changes nothing
    assert not store.privacy.forget_user("t", "quiet").residue and store.fits.current_fit("t").status == "current"
    report = store.privacy.delete_events("t", "u1", item="i2")
    assert store.fits.current_fit("t").status == "stale" and report.residue
    model.fit("t")
    assert store.fits.current_fit("t").status == "current"
    report = store.privacy.forget_item("t", "item", "i4")
    assert store.fits.current_fit("t").status == "stale" and "i4" not in store.content.vectors("t", "behavior", "item")


def test_the_refit_policy_queues_a_fit_after_enough_new_events(tmp_path: Path) -> None:
    with MemoryStore.open(Settings(home=tmp_path / "home", refit_every_events=3)) as store:
        model = _tenant(store, tmp_path, USERS)
        assert store.jobs.jobs("t") == []  # no fit yet: a first fit is asked for, never automatic
        model.fit("t", {"dim": 3})
        store.events.ingest_events("t", [{"user": "u0", "type": "like", "item": "i1", "ts": T0}] * 2)
        assert store.fits.fit_due("t") is None and store.jobs.jobs("t") == []
        store.events.ingest_events("t", [{"user": "u0", "type": "like", "item": "i2", "ts": T0}])
        assert "3 events since fit 1" in store.fits.fit_due("t")
        [job] = store.jobs.jobs("t")
        assert job.kind == "fit" and "refit policy" in job.spec["reason"]
        store.events.ingest_events("t", [{"user": "u0", "type": "like", "item": "i3", "ts": T0}])
        assert len(store.jobs.jobs("t")) == 1  # one queued refit is enough


@pytest.mark.parametrize("user", [None])
def test_tenant_jobs_have_no_user(store: MemoryStore, user: None) -> None:
    store.users.create_tenant("t")
    job = store.jobs.submit_job("t", user, {"kind": "fit"}, key="fit-now")
    assert job.user is None and store.jobs.jobs("t")[0].key == "fit-now" and store.jobs.job("t", "fit-now").user is None
