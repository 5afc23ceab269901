"""Retention: expired items go with their blobs, vectors and derived artifacts; newer ones stay."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import update

from tests.helpers import add_text_artifact, png_bytes, unit, wav_bytes
from unipgen.errors import InvalidInputError
from unipgen.memory import MemoryStore, retention
from unipgen.memory.models import (
    Artifact,
    BehaviorEvent,
    Blob,
    Embedding,
    Face,
    Lineage,
    VoiceSample,
)

NOW = datetime.now(timezone.utc)


def _age(store: MemoryStore, model: type, key: str, days: float) -> None:
    """Time travel: make row `key` of `model` `days` old (creation times are set by the store)."""
    with store.write() as w:
        w.session.execute(update(model).where(model.key == key).values(created_at=NOW - timedelta(days=days)))


@pytest.fixture
def aged(populated: MemoryStore) -> MemoryStore:
    """alice: an old face with an output and an adapter derived from it, a new face, an old output."""
    rng = np.random.default_rng(0)
    s = populated
    s.content.add_face("acme", "alice", "old", png_bytes("red"), consent=True, embedding=unit(rng.normal(size=8)))
    s.content.add_face("acme", "alice", "new", png_bytes("blue"), consent=True, embedding=unit(rng.normal(size=8)))
    s.artifacts.add_artifact("acme", "portrait", kind="output", media_type="image/png", data=png_bytes("white"),
                   user="alice", derived_from=[("face", "old")])
    s.users.set_training_consent("acme", "alice", True)  # an adapter learned from her face
    s.artifacts.add_artifact("acme", "lora", kind="adapter", media_type="application/octet-stream", data=b"lora",
                   user="alice", derived_from=[("face", "old")])
    s.artifacts.add_artifact("acme", "old-out", kind="output", media_type="text/plain", data=b"hello", user="alice")
    _age(s, Face, "old", 60)
    _age(s, Artifact, "old-out", 100)
    return s


def _keys(store: MemoryStore, model: type) -> set[str]:
    with store.session() as session:
        return set(session.query(model.key))  # type: ignore[arg-type]


def test_purge_removes_only_expired_items_and_what_derives_from_them(aged: MemoryStore) -> None:
    report = aged.privacy.purge_expired({"face": 30, "output": 90}, now=NOW)
    assert report.purged == {"face": 1, "output": 1} and report.derived == 2 and report.residue == ()
    assert report.cutoffs == {"face": NOW - timedelta(days=30), "output": NOW - timedelta(days=90)}
    assert {k for (k,) in _keys(aged, Face)} == {"new"}
    assert _keys(aged, Artifact) == set()  # portrait and lora (derived), old-out (expired)
    shas = set(aged.blobs.list())
    assert shas == {hashlib.sha256(png_bytes("blue")).hexdigest()}
    assert aged.count_rows(Blob) == 1 and aged.count_rows(Lineage) == 0 and aged.count_rows(Embedding) == 1
    assert [h.key for h in aged.content.search("acme", "face", unit(np.ones(8)), k=5, user="alice")] == ["new"]


def test_dry_run_counts_the_same_and_changes_nothing(aged: MemoryStore) -> None:
    blobs_before = set(aged.blobs.list())
    dry = aged.privacy.purge_expired({"face": 30, "output": 90, "event": 10_000}, now=NOW, dry_run=True)
    assert dry.purged == {"face": 1, "output": 1, "event": 0} and dry.derived == 2
    assert {k for (k,) in _keys(aged, Face)} == {"old", "new"} and len(_keys(aged, Artifact)) == 3
    assert set(aged.blobs.list()) == blobs_before and aged.count_rows(Lineage) == 2
    real = aged.privacy.purge_expired({"face": 30, "output": 90, "event": 10_000}, now=NOW)
    assert (real.purged, real.derived, real.cutoffs) == (dry.purged, dry.derived, dry.cutoffs)


def test_nothing_expires_within_the_limit(aged: MemoryStore) -> None:
    report = aged.privacy.purge_expired({"face": 61, "output": 101, "voice": 0}, now=NOW)
    assert report.purged == {"face": 0, "output": 0, "voice": 0} and report.derived == 0
    assert len(_keys(aged, Face)) == 2 and len(_keys(aged, Artifact)) == 3


def test_an_expired_output_derived_from_an_expired_face_counts_once(aged: MemoryStore) -> None:
    _age(aged, Artifact, "portrait", 100)
    report = aged.privacy.purge_expired({"face": 30, "output": 90}, now=NOW)
    assert report.purged == {"face": 1, "output": 2} and report.derived == 1  # only the adapter


def test_chunked_purge_counts_like_one_pass(aged: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """One item per transaction: portrait goes with the old face's chunk and is counted once."""
    monkeypatch.setattr(retention, "CHUNK", 1)
    _age(aged, Artifact, "portrait", 100)
    dry = aged.privacy.purge_expired({"face": 30, "output": 90}, now=NOW, dry_run=True)
    real = aged.privacy.purge_expired({"face": 30, "output": 90}, now=NOW)
    assert (real.purged, real.derived) == (dry.purged, dry.derived) == ({"face": 1, "output": 2}, 1)
    assert _keys(aged, Artifact) == set() and real.residue == ()


def test_voices_and_documents_expire(populated: MemoryStore) -> None:
    populated.content.add_voice("acme", "bob", "v1", wav_bytes(), consent=True)
    populated.content.add_document("acme", "bob", "old", "written long ago", ts=NOW - timedelta(days=400))
    populated.content.add_document("acme", "bob", "new", "written today")
    add_text_artifact(populated, "summary", b"s", user="bob", derived_from=[("document", "old")])
    _age(populated, VoiceSample, "v1", 31)
    report = populated.privacy.purge_expired({"voice": 30, "document": 365}, now=NOW)
    assert report.purged == {"voice": 1, "document": 1} and report.derived == 1
    assert [d.key for d in populated.content.documents("acme", "bob")] == ["new"]
    assert populated.count_rows(VoiceSample) == 0 and populated.count_rows(Artifact) == 0
    assert list(populated.blobs.list()) == []


def test_events_expire_with_the_history_artifacts_built_before_the_cutoff(populated: MemoryStore) -> None:
    # alice has events at 2001 and 2020, bob at 2004 (the populated fixture).
    add_text_artifact(populated, "old-profile", b"p1", user="alice", derived_from=[("user", "alice")], kind="adapter")
    add_text_artifact(populated, "uses-it", b"o", user="alice", derived_from=[("artifact", "old-profile")])
    add_text_artifact(populated, "new-profile", b"p2", user="alice", derived_from=[("user", "alice")], kind="adapter")
    now = datetime(2021, 1, 1, tzinfo=timezone.utc)
    with populated.write() as w:  # old-profile was built in 2019, from alice's 2001 event only
        w.session.execute(update(Artifact).where(Artifact.key == "old-profile")
                          .values(created_at=datetime(2019, 1, 1, tzinfo=timezone.utc)))
        w.session.execute(update(Artifact).where(Artifact.key != "old-profile").values(created_at=now))
    report = populated.privacy.purge_expired({"event": 365 * 2}, now=now)  # cutoff early 2019
    assert report.purged == {"event": 2} and report.derived == 2
    with populated.session() as session:
        assert [e.ts.year for e in session.query(BehaviorEvent)] == [2020]
    assert {k for (k,) in _keys(populated, Artifact)} == {"new-profile"}
    assert populated.count_rows(Lineage) == 1  # new-profile <- alice


def test_purge_runs_across_tenants(aged: MemoryStore) -> None:
    aged.users.create_tenant("globex")
    aged.users.create_user("globex", "carol")
    aged.content.add_face("globex", "carol", "c1", png_bytes("red"), consent=True)  # the same bytes as alice's old face
    _age(aged, Face, "c1", 60)
    report = aged.privacy.purge_expired({"face": 30}, now=NOW)
    assert report.purged == {"face": 2} and report.residue == ()
    assert {k for (k,) in _keys(aged, Face)} == {"new"}
    assert hashlib.sha256(png_bytes("red")).hexdigest() not in aged.blobs.list()


@pytest.mark.parametrize("policy, message", [
    ({"photos": 30}, r"unknown retention kind 'photos'; expected one of \['face', 'voice', 'document', 'event', 'output'\]"),
    ({"face": -1}, "retention of 'face' must be a finite number of days"),
    ({"face": float("nan")}, "finite"),
    ({"face": "30"}, "finite"),
])
def test_bad_policies_are_refused(aged: MemoryStore, policy: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        aged.privacy.purge_expired(policy, now=NOW)
    assert len(_keys(aged, Face)) == 2


def test_now_must_be_aware(aged: MemoryStore) -> None:
    with pytest.raises(InvalidInputError, match="aware"):
        aged.privacy.purge_expired({"face": 1}, now=datetime(2020, 1, 1))
