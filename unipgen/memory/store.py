"""`MemoryStore`: the user-memory store every later layer reads.

The store opens the database (SQLAlchemy), the blob store (fsspec) and the faiss indexes, and
hands them to its parts, each an object with one job:

========================  =========================================================================
``store.users``           tenants, users and profiles (`unipgen.memory.users`)
``store.catalog``         catalog items: added in bulk, texts, metadata (`unipgen.memory.catalog`)
``store.events``          behavior events and feedback on outputs (`unipgen.memory.events`)
``store.content``         documents, faces, voices, subjects and their files; embeddings and
                          vector search (`unipgen.memory.content`)
``store.artifacts``       outputs and adapters with their lineage (`unipgen.memory.artifacts`)
``store.reads``           what one request reads: a user's snapshot, a recommendation's events
                          and vectors (`unipgen.memory.reads`)
``store.fits``            fits of the behavior space (`unipgen.memory.fits`)
``store.jobs``            the job queue (`unipgen.memory.jobs`)
``store.keys``            API keys of the HTTP service (`unipgen.memory.apikeys`)
``store.audit``           who read or changed what (`unipgen.memory.audit`)
``store.privacy``         export and import of a user, forget, purge of expired data
                          (`unipgen.memory.privacy`)
========================  =========================================================================

Every write of every part is one short transaction (`write`, a `Transaction`); a failure
anywhere in it leaves nothing written, including blob files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from unipgen.memory.apikeys import ApiKeys
from unipgen.memory.archive import Archive
from unipgen.memory.artifacts import Artifacts
from unipgen.memory.audit import Audit
from unipgen.memory.blobs import BlobStore
from unipgen.memory.catalog import Catalog
from unipgen.memory.checks import RuleViolation, find_violations
from unipgen.memory.content import Content
from unipgen.memory.db import make_engine, migrate
from unipgen.memory.events import Events
from unipgen.memory.fits import Fits
from unipgen.memory.forget import Forget
from unipgen.memory.indexes import IndexManager
from unipgen.memory.jobs import Jobs
from unipgen.memory.media import MediaLimits
from unipgen.memory.privacy import Privacy
from unipgen.memory.private import private_dir
from unipgen.memory.reads import Reads
from unipgen.memory.retention import Retention
from unipgen.memory.transaction import Database, Transaction
from unipgen.memory.users import Users
from unipgen.settings import Settings


class MemoryStore:
    """Tenants, users and everything unipgen remembers about them, as parts (see the module
    docstring): ``store.users.create_user(...)``, ``store.content.add_face(...)``...

    Build it with `MemoryStore.open(settings)` (migrates the database) or pass the pieces.
    """

    def __init__(
        self, engine: Engine, blobs: BlobStore, indexes: IndexManager, max_blob_bytes: int,
        max_queued_jobs: int = 1000, scratch_dir: Path | None = None, media_limits: MediaLimits | None = None,
        max_document_chars: int = 100_000, refit_every_events: int = 0,
    ) -> None:
        self.engine = engine
        self.blobs = blobs
        self.indexes = indexes
        self.db = Database(engine, blobs)
        self._max_blob_bytes = max_blob_bytes
        self._max_queued_jobs = max_queued_jobs
        # scratch_dir: running jobs' checkpoints (`Jobs.job_scratch`); None: jobs keep none
        self._scratch_dir = scratch_dir
        self._media_limits = media_limits or MediaLimits()
        self._max_document_chars = max_document_chars
        # refit policy (`Fits.fit_due`); 0: only on demand and after forget
        self._refit_every_events = refit_every_events

    # Parts are built on first use: a request touches two or three of them, and a part holds no
    # state of its own beyond what it is given here.

    @cached_property
    def users(self) -> Users:
        return Users(self.db)

    @cached_property
    def catalog(self) -> Catalog:
        return Catalog(self.db, self.indexes, self._max_blob_bytes, self._media_limits)

    @cached_property
    def events(self) -> Events:
        return Events(self.db, self._refit_every_events)

    @cached_property
    def content(self) -> Content:
        return Content(self.db, self.indexes, self._max_blob_bytes, self._media_limits, self._max_document_chars)

    @cached_property
    def artifacts(self) -> Artifacts:
        return Artifacts(self.db, self._max_blob_bytes)

    @cached_property
    def reads(self) -> Reads:
        return Reads(self.db, self.indexes)

    @cached_property
    def fits(self) -> Fits:
        return Fits(self.db, self.indexes, self._refit_every_events)

    @cached_property
    def jobs(self) -> Jobs:
        return Jobs(self.db, self.artifacts, self.fits, max_queued_jobs=self._max_queued_jobs,
                    scratch_dir=self._scratch_dir)

    @cached_property
    def keys(self) -> ApiKeys:
        return ApiKeys(self.db)

    @cached_property
    def audit(self) -> Audit:
        return Audit(self.db)

    @cached_property
    def privacy(self) -> Privacy:
        forget = Forget(self.db, self.indexes, self._scratch_dir)
        return Privacy(Archive(self.db, self.indexes, self.users), forget, Retention(self.db, forget))

    @classmethod
    def open(cls, settings: Settings | None = None) -> MemoryStore:
        """The store described by `settings` (read from the environment when None), migrated.

        The data dir is made 0700 (tightened, with a warning, when it was open to others): it
        holds biometric data (see `unipgen.memory.private`)."""
        settings = settings or Settings()
        private_dir(settings.home)
        engine = make_engine(settings.resolved_database_url())
        migrate(engine)
        indexes = IndexManager(engine, settings.resolved_index_dir())
        return cls(engine, BlobStore(settings.resolved_blob_url()), indexes, settings.max_blob_bytes,
                   settings.max_queued_jobs, settings.resolved_scratch_dir(), MediaLimits.from_settings(settings),
                   settings.max_document_chars, settings.refit_every_events)

    def close(self) -> None:
        """Persist changed indexes and release database connections."""
        self.indexes.save()
        self.engine.dispose()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def session(self) -> Session:
        """A new session for reads the caller composes itself (the caller owns and closes it)."""
        return self.db.session()

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """A transaction of the caller's own; on failure it rolls back and removes the blob files it wrote."""
        with self.db.write() as w:
            yield w

    def check_data(self) -> list[RuleViolation]:
        """Stored rows that break the data rules (`unipgen.schema.rules`): ids no URL reaches,
        non-finite numbers. Written before the rules were enforced; empty when clean."""
        with self.session() as session:
            return find_violations(session)

    def count_rows(self, model: type) -> int:
        with self.session() as session:
            return session.scalar(select(func.count()).select_from(model)) or 0
