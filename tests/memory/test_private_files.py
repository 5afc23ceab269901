"""Biometric data stays with the service's account: the data dir, the database files, blobs,
index files and job scratch folders are 0700/0600 whatever the umask; a data dir left open to
others is tightened; a local Ray cluster's temp dir sits in a 0700 folder."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from tests.helpers import png_bytes, unit, wav_bytes
from unipgen.memory import MemoryStore
from unipgen.memory.models import EmbeddingSpace
from unipgen.settings import Settings


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask: every 0600/0700 below is unipgen's doing, not the environment's."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_every_file_of_the_data_dir_is_private(tmp_path: Path, open_umask: None) -> None:
    home = tmp_path / "home"
    rng = np.random.default_rng(0)
    with MemoryStore.open(Settings(home=home)) as store:
        store.users.create_tenant("acme")
        store.users.create_user("acme", "alice")
        store.content.add_face("acme", "alice", "f1", png_bytes("red"), consent=True, embedding=unit(rng.normal(size=8)))
        store.content.add_voice("acme", "alice", "v1", wav_bytes(), consent=True, embedding=unit(rng.normal(size=8)))
        store.jobs.submit_job("acme", "alice", {"kind": "train", "method": "lora"}, key="j1")
        with store.session() as session:  # load (and so save) every index
            for space in session.scalars(select(EmbeddingSpace)):
                store.indexes.get(space.tenant_id, space.name)
        scratch = store.jobs.job_scratch("acme", "j1")
        assert scratch is not None and mode(scratch) == 0o700 and mode(scratch.parent) == 0o700
        database = [home / name for name in ("unipgen.db", "unipgen.db-wal", "unipgen.db-shm")]
        assert all(path.exists() for path in database)  # WAL mode, connections open
        assert {path.name: mode(path) for path in database} == dict.fromkeys((p.name for p in database), 0o600)
    assert mode(home) == 0o700
    files = [p for p in home.rglob("*") if p.is_file()]
    folders = [p for p in home.rglob("*") if p.is_dir()]
    blobs = [p for p in files if "blobs" in p.parts]
    indexes = [p for p in files if "indexes" in p.parts]
    assert len(blobs) == 2 and indexes  # the photo, the recording; the saved face and voice indexes
    assert {str(p.relative_to(home)): oct(mode(p)) for p in files if mode(p) != 0o600} == {}
    assert {str(p.relative_to(home)): oct(mode(p)) for p in folders if mode(p) != 0o700} == {}


def test_a_data_dir_open_to_others_is_tightened_with_a_warning(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    home = tmp_path / "old-home"
    home.mkdir()
    os.chmod(home, 0o755)
    (home / "unipgen.db").touch()
    os.chmod(home / "unipgen.db", 0o644)
    with caplog.at_level(logging.WARNING, logger="unipgen.memory"), MemoryStore.open(Settings(home=home)):
        pass
    assert mode(home) == 0o700 and mode(home / "unipgen.db") == 0o600
    assert "readable by other accounts" in caplog.text


def test_a_local_ray_cluster_gets_its_temp_dir_in_a_private_folder(open_umask: None) -> None:
    from unipgen.orchestrator.ray_cluster import private_temp_dir

    temp_dir = private_temp_dir()
    try:
        assert mode(temp_dir.parent) == 0o700 and not temp_dir.exists()  # Ray creates it, 0777 inside
        assert len(str(temp_dir)) < 40  # room for Ray's socket paths (107 bytes at most)
    finally:
        temp_dir.parent.rmdir()
