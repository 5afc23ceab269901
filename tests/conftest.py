"""Shared fixtures: a fresh store per test on SQLite (blobs in a folder) and, when configured, on real
PostgreSQL with blobs on an S3 server (moto, on loopback)."""

from __future__ import annotations

import os

# One thread for BLAS/faiss/torch: on 2 shared cores, 2 threads can run 10x slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.raycluster import LoopbackCluster
from tests.s3server import S3Server, aws_environment, s3_server
from unipgen.eval.environment import shared_data_dir
from unipgen.memory import MemoryStore
from unipgen.memory.db import make_engine, migrate, temporary_database
from unipgen.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "unipgen" / "data" / "movielens-sample"


def postgres_url() -> str | None:
    url = os.environ.get("UNIPGEN_TEST_POSTGRES_URL")
    if not url and os.environ.get("UNIPGEN_REQUIRE_POSTGRES"):
        pytest.fail("UNIPGEN_REQUIRE_POSTGRES is set but UNIPGEN_TEST_POSTGRES_URL is not")
    return url


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[str, str]]:
    """A migrated PostgreSQL database that each test copies (CREATE DATABASE ... TEMPLATE): fast."""
    url = postgres_url()
    if not url:
        pytest.skip("set UNIPGEN_TEST_POSTGRES_URL to run the PostgreSQL suite (CI does)")
    with temporary_database(url, "unipgen_template") as template_url:
        engine = make_engine(template_url)
        migrate(engine)
        engine.dispose()  # a template database must have no open connections
        yield url, make_url(template_url).database


@pytest.fixture
def postgres_database(postgres_template: tuple[str, str]) -> Iterator[str]:
    """A new PostgreSQL database for one test, already migrated, dropped afterwards."""
    admin_url, template = postgres_template
    with temporary_database(admin_url, "unipgen_test", template) as url:
        yield url


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One S3-compatible server (moto, on loopback) for the session; this process's S3 clients
    point at it. Each store takes its own prefix (`S3Server.blob_url()`)."""
    with s3_server() as server, aws_environment(server):
        yield server


@pytest.fixture(params=["sqlite", pytest.param("postgres+s3", marks=[pytest.mark.postgres, pytest.mark.scale])])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of a fresh data dir: the embedded default (SQLite and blobs in it), or the scale
    configuration (a fresh PostgreSQL database, blobs under a fresh prefix on the S3 server)."""
    database_url = blob_url = None
    if request.param == "postgres+s3":
        database_url = request.getfixturevalue("postgres_database")
        blob_url = request.getfixturevalue("s3").blob_url()
    return Settings(home=tmp_path / "home", database_url=database_url, blob_url=blob_url, max_blob_bytes=200_000)


@pytest.fixture
def store(settings: Settings) -> Iterator[MemoryStore]:
    with MemoryStore.open(settings) as opened:
        yield opened


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[MemoryStore]:
    with MemoryStore.open(Settings(home=tmp_path / "sqlite-home")) as opened:
        yield opened


@pytest.fixture
def shared_data() -> Path:
    """The full data sets (../shared/data or UNIPGEN_SHARED_DATA); skips where absent."""
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"full data sets not found at {root} (set UNIPGEN_SHARED_DATA); CI has them")
    return root


@pytest.fixture
def populated(store: MemoryStore) -> MemoryStore:
    """Tenant `acme` with users alice and bob, five catalog items and a few ratings."""
    store.users.create_tenant("acme")
    store.users.create_users("acme", ["alice", "bob"])
    store.catalog.add_items("acme", [{"key": f"m{i}", "text": f"movie {i}"} for i in range(5)])
    store.events.ingest_events("acme", [
        {"user": "alice", "type": "rate", "item": "m1", "value": 4.5, "ts": 1_000_000_000},
        {"user": "alice", "type": "click", "item": "m2", "ts": "2020-01-01T10:00:00+02:00"},
        {"user": "bob", "type": "like", "item": "m1", "ts": 1_100_000_000},
    ])
    return store


#: The session's Ray cluster (`ray_cluster`): a head and one more node, each with one fake GPU and
#: a custom resource of its own, so that a profile can pin a model to either (`resources`).
RAY_HEAD = {"num_cpus": 1, "num_gpus": 1, "resources": {"pool_a": 1}}
RAY_NODE = {"num_cpus": 1, "num_gpus": 1, "resources": {"pool_b": 1}}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LoopbackCluster]:
    """A real two-node Ray cluster on 127.0.0.1 with token auth, started once for the session
    with `ray start` (tests/raycluster.py; ~20 s on 2 cores) and stopped at its end, its own
    processes only. Drivers join it with `cluster.env` (`UNIPGEN_RAY_ADDRESS`, the token); a
    test that kills a node adds one back (`add_node`), and one that makes model actors stops them."""
    pytest.importorskip("ray")
    from tests.raycluster import loopback_cluster

    with loopback_cluster(RAY_HEAD, RAY_NODE) as cluster:
        yield cluster


#: The test modules that use the session's Ray cluster (`ray_cluster`): under pytest-xdist they
#: all run on one worker, so that one cluster starts (checked at collection).
RAY_MODULES = ("tests/orchestrator/test_ray.py", "tests/orchestrator/test_ray_cluster.py",
               "tests/api/test_scale_processes.py")


def _module(nodeid: str) -> str:
    return nodeid.split("::")[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unlisted = sorted({_module(item.nodeid) for item in items
                       if "ray_cluster" in getattr(item, "fixturenames", ())} - set(RAY_MODULES))
    if unlisted:
        raise pytest.UsageError(f"{unlisted} use ray_cluster: add them to RAY_MODULES in tests/conftest.py")


try:
    from xdist.scheduler import LoadScopeScheduling
except ImportError:  # pytest-xdist is a dev extra; without it the suite runs in one process
    pass
else:
    class _ModuleScheduling(LoadScopeScheduling):
        """Each test module's tests on one worker (its module fixtures, tiny models and stores,
        are built once), and the modules on the Ray cluster together."""

        def _split_scope(self, nodeid: str) -> str:
            return "ray-cluster" if _module(nodeid) in RAY_MODULES else _module(nodeid)

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling:
        """`make test` runs the suite on two pytest-xdist workers, scheduled by module."""
        return _ModuleScheduling(config, log)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With UNIPGEN_NO_SKIPS=1 (CI sets it), a skipped test fails the run: every check the suite
    promises must run where CI runs (.ci/run installs what the skipping tests need)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if os.environ.get("UNIPGEN_NO_SKIPS") == "1" and skipped and exitstatus == pytest.ExitCode.OK:
        reporter.write_line(f"UNIPGEN_NO_SKIPS=1: {len(skipped)} test(s) skipped, which fails this run", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
