"""Forget leaves no copy of a forgotten text in the SQLite files (database, -wal, -shm):
secure_delete zeroes the deleted rows and the WAL is checkpointed and truncated. The residue
scan reads those files, so a copy planted there is reported."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from unipgen.memory import MemoryStore
from unipgen.settings import Settings

SECRET = "my passport number is QX-4471-ZEBRA and I live at 12 Quiet Lane"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def populated(home: Path) -> Iterator[MemoryStore]:
    with MemoryStore.open(Settings(home=home)) as store:
        store.users.create_tenant("acme")
        store.users.create_users("acme", ["alice", "bob"])
        yield store


def raw_bytes(home: Path) -> dict[str, bytes]:
    """The database's files as they lie on disk (the WAL and shared memory included)."""
    names = ("unipgen.db", "unipgen.db-wal", "unipgen.db-shm")
    return {name: (home / name).read_bytes() for name in names if (home / name).exists()}


def test_forget_leaves_no_copy_in_the_database_files(populated: MemoryStore, home: Path) -> None:
    populated.content.add_document("acme", "alice", "d1", SECRET)
    populated.users.set_profile("acme", "alice", "note", SECRET[:30])
    assert any(SECRET.encode() in data for data in raw_bytes(home).values())  # the probe sees it
    report = populated.privacy.forget_user("acme", "alice")
    assert report.residue == []
    left = {name: data.count(SECRET[:20].encode()) for name, data in raw_bytes(home).items()}
    assert set(left.values()) == {0}, left
    with populated.engine.connect() as conn:  # asked for, not left to how SQLite was built (Debian: on)
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar() == 1


def test_forget_of_one_document_leaves_no_copy_either(populated: MemoryStore, home: Path) -> None:
    populated.content.add_document("acme", "alice", "d1", SECRET)
    populated.content.add_document("acme", "alice", "d2", "a text that stays where it is")
    report = populated.privacy.forget_item("acme", "document", "d1", user="alice")
    assert report.residue == []
    assert all(SECRET[:20].encode() not in data for data in raw_bytes(home).values())
    assert any(b"a text that stays" in data for data in raw_bytes(home).values())


def test_the_residue_scan_reports_a_copy_left_in_the_database_file(populated: MemoryStore, home: Path) -> None:
    """A copy of the text outside the store's rows (a table written behind its back: what an
    old page or WAL frame would be) is found and reported."""
    populated.content.add_document("acme", "alice", "d1", SECRET)
    with sqlite3.connect(home / "unipgen.db") as conn:
        conn.execute("CREATE TABLE stray (t TEXT)")
        conn.execute("INSERT INTO stray VALUES (?)", (SECRET,))
    report = populated.privacy.forget_user("acme", "alice")
    assert report.residue == ["text of document 'd1' in the database files"]


def test_a_text_another_user_still_holds_is_not_residue(populated: MemoryStore) -> None:
    populated.content.add_document("acme", "alice", "d1", SECRET)
    populated.content.add_document("acme", "bob", "d1", SECRET)
    assert populated.privacy.forget_user("acme", "alice").residue == []


def test_forget_removes_the_users_job_checkpoints(populated: MemoryStore) -> None:
    """A training job's checkpoint is derived from the user's photos: it goes with the user."""
    populated.jobs.submit_job("acme", "alice", {"kind": "train", "method": "lora"}, key="j1")
    scratch = populated.jobs.job_scratch("acme", "j1")
    (scratch / "checkpoint.pt").write_bytes(b"weights learned from alice's photos")
    kept = populated.jobs.job_scratch("acme", "bobs-job")
    report = populated.privacy.forget_user("acme", "alice")
    assert report.residue == [] and report.deleted["jobs"] == 1
    assert not scratch.exists() and kept.exists()


def test_a_job_that_ends_drops_its_checkpoints(populated: MemoryStore) -> None:
    for key in ("ok", "failed", "cancelled"):
        populated.jobs.submit_job("acme", "bob", {"kind": "train", "method": "lora"}, key=key)
    folders = {key: populated.jobs.job_scratch("acme", key) for key in ("ok", "failed", "cancelled")}
    populated.jobs.claim_job("w", 30, key="ok")
    populated.jobs.finish_job("acme", "ok", "w", {})
    populated.jobs.claim_job("w", 30, key="failed")
    populated.jobs.fail_job("acme", "failed", "w", {"code": "x", "message": "x"}, retryable=False)
    populated.jobs.cancel_job("acme", "cancelled")
    assert {key: folder.exists() for key, folder in folders.items()} == dict.fromkeys(folders, False)


def test_a_retryable_failure_keeps_the_checkpoints(populated: MemoryStore) -> None:
    populated.jobs.submit_job("acme", "bob", {"kind": "train", "method": "lora"}, key="again")
    scratch = populated.jobs.job_scratch("acme", "again")
    populated.jobs.claim_job("w", 30, key="again")
    populated.jobs.fail_job("acme", "again", "w", {"code": "internal", "message": "x"}, retryable=True, backoff_s=0)
    assert scratch.exists() and populated.jobs.job("acme", "again").status == "queued"


def test_a_scratch_folder_is_removed_while_a_job_writes_checkpoints_into_it(tmp_path: Path) -> None:
    """A training step may write a checkpoint into a job's scratch folder while forget removes
    it (an entry added mid-removal made the last rmdir fail, and the folder stayed): the folder is
    renamed away first, so the writer's next checkpoint is refused and it stops, and nothing is left."""
    import threading

    pytest.importorskip("torch")
    from unipgen.memory.jobs import remove_tree
    from unipgen.modalities.checkpoints import Checkpoint, save_checkpoint

    checkpoint = Checkpoint(step=1, weights={}, optimizer={}, losses=[], rng=None, fingerprint="f")
    for attempt in range(20):
        scratch = tmp_path / f"job-{attempt}"
        scratch.mkdir()
        saved: list[bool] = []

        def train(folder: Path = scratch, saved: list[bool] = saved) -> None:  # checkpointing as fast as it can
            while not saved or saved[-1]:
                saved.append(save_checkpoint(folder / "digest", checkpoint))

        writer = threading.Thread(target=train, daemon=True)
        writer.start()
        while not saved:
            pass
        remove_tree(scratch)
        writer.join(timeout=10)
        assert not writer.is_alive() and saved[-1] is False
        assert list(tmp_path.iterdir()) == []
