"""`store.jobs`: the job queue, kept in the store: a restart of the service or a dead worker
loses no job.

Every state change is one short transaction, and the ones that hand a job to a worker are
conditional updates (`... WHERE status = 'queued'`), so several processes may claim from the
same database and each job goes to one of them. A job's outputs are written in the same
transaction that marks it succeeded (`finish_job`), so a job that is retried after its worker
died never stores its outputs twice.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from unipgen.errors import ConflictError, NotFoundError, QueueFullError
from unipgen.memory.artifacts import Artifacts
from unipgen.memory.fits import FitOutput, Fits
from unipgen.memory.lookups import check_key, tenant_id_of, user_id_of
from unipgen.memory.models import Job, Tenant, User, utcnow
from unipgen.memory.private import private_dir
from unipgen.memory.transaction import Database, Transaction, rowcount
from unipgen.schema.jobs import TERMINAL, JobRecord, JobStatus

_PENDING = ("queued", "running")


@dataclass(frozen=True)
class OutputArtifact:
    """An artifact a job made, stored when the job is marked succeeded (see `Artifacts.add_artifact`)."""

    key: str
    kind: str
    media_type: str
    data: bytes | None
    derived_from: Sequence[tuple[str, str]] = ()
    meta: dict[str, Any] | None = None


class Jobs:
    """Jobs: submitted (at most `max_queued_jobs` pending per tenant), claimed by workers on a
    lease, ended with their outputs (artifacts, fits) in one transaction, cancelled; and the
    scratch folders under `scratch_dir` where running jobs keep checkpoints (None: none kept)."""

    def __init__(self, db: Database, artifacts: Artifacts, fits: Fits, *, max_queued_jobs: int = 1000,
                 scratch_dir: Path | None = None) -> None:
        self.db = db
        self.artifacts = artifacts
        self.fits = fits
        self.max_queued_jobs = max_queued_jobs
        self.scratch_dir = scratch_dir

    def job_scratch(self, tenant: str, key: str) -> Path | None:
        """The folder where job `key` keeps what a retry of it needs (training checkpoints), made
        0700 on first use; None when the store has no scratch dir. It is removed when the job
        ends (succeeded, failed for good, cancelled) and when its user is forgotten: a
        checkpoint is derived from the user's data."""
        if self.scratch_dir is None:
            return None
        private_dir(self.scratch_dir)
        return private_dir(scratch_path(self.scratch_dir, tenant, key))

    def drop_job_scratch(self, tenant: str, key: str) -> None:
        """Remove job `key`'s scratch folder now (a worker whose job was deleted under it)."""
        if self.scratch_dir is not None:
            remove_tree(scratch_path(self.scratch_dir, tenant, key))

    def _drop_scratch_after(self, w: Transaction, tenant: str, key: str) -> None:
        """Remove the job's scratch folder once the transaction that ends the job commits."""
        if self.scratch_dir is not None:
            path = scratch_path(self.scratch_dir, tenant, key)
            w.after_commit.append(lambda: remove_tree(path))

    def submit_job(self, tenant: str, user: str | None, spec: dict[str, Any], *, key: str | None = None,
                   max_attempts: int = 3) -> JobRecord:
        """Queue a job for `user` (None: a job of the whole tenant, such as a fit). With `key`,
        submitting the same job again returns the first one (idempotent); the same key with a
        different spec is a `ConflictError`."""
        if key is not None:
            check_key(key, "job")
        with self.db.write() as w:
            tenant_id = tenant_id_of(w.session, tenant)
            user_id = user_id_of(w.session, tenant, user) if user is not None else None
            if key is not None:
                found = w.session.scalar(select(Job).where(Job.tenant_id == tenant_id, Job.key == key))
                if found is not None:
                    if found.spec != spec or found.user_id != user_id:
                        raise ConflictError(f"job {key!r} exists with a different request")
                    return _record(w.session, found)
            pending = w.session.execute(select(func.count()).select_from(Job).where(
                Job.tenant_id == tenant_id, Job.status.in_(_PENDING))).scalar_one()
            if pending >= self.max_queued_jobs:
                raise QueueFullError(f"tenant {tenant!r} has {pending} jobs queued or running (the limit): "
                                     "retry later")
            now = utcnow()
            job = Job(tenant_id=tenant_id, user_id=user_id, key=key or f"job-{uuid.uuid4().hex}",
                      kind=str(spec.get("kind")), spec=spec, status="queued", progress=0.0, attempts=0,
                      max_attempts=max_attempts, cancel_requested=False, run_after=now, created_at=now,
                      updated_at=now)
            w.session.add(job)
            w.session.flush()
            return _record(w.session, job)

    def job(self, tenant: str, key: str) -> JobRecord:
        with self.db.session() as session:
            return _record(session, _job(session, tenant, key))

    def jobs(self, tenant: str, *, user: str | None = None, status: str | None = None,
             limit: int = 100) -> list[JobRecord]:
        """Jobs of a tenant (or of one user), newest first."""
        with self.db.session() as session:
            query = (select(Job, User.key).outerjoin(User, User.id == Job.user_id)
                     .where(Job.tenant_id == tenant_id_of(session, tenant)))
            if user is not None:
                query = query.where(Job.user_id == user_id_of(session, tenant, user))
            if status is not None:
                query = query.where(Job.status == status)
            rows = session.execute(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)).all()
            return [_record(session, job, tenant, user_key) for job, user_key in rows]

    def claim_job(self, worker: str, lease_s: float, *, tenant: str | None = None,
                  key: str | None = None) -> JobRecord | None:
        """Hand the oldest runnable queued job (or job `key`) to `worker` for `lease_s` seconds.

        Jobs whose worker's lease ran out are queued again first. Returns None when nothing is
        runnable. Safe with concurrent claimers: a job goes to exactly one of them.
        """
        claimed = self.claim_jobs(worker, lease_s, 1, tenant=tenant, key=key)
        return claimed[0] if claimed else None

    def claim_jobs(self, worker: str, lease_s: float, limit: int, *, tenant: str | None = None,
                   key: str | None = None) -> list[JobRecord]:
        """`claim_job` for up to `limit` jobs in one transaction, oldest first (a worker that
        runs several at once claims them together)."""
        with self.db.write() as w:
            now = utcnow()
            _requeue_expired(w.session, now)  # in the claim's transaction: one write, not two
            query = select(Job.id).where(Job.status == "queued", Job.run_after <= now)
            if tenant is not None:
                query = query.where(Job.tenant_id == tenant_id_of(w.session, tenant))
            if key is not None:
                query = query.where(Job.key == key)
            claimed = []
            # Read more than wanted: a concurrent claimer may take some first (the update's
            # status condition makes each job go to one claimer only).
            for job_id in w.session.scalars(query.order_by(Job.run_after, Job.id).limit(limit + 8)):
                taken = rowcount(w.session.execute(
                    update(Job).where(Job.id == job_id, Job.status == "queued")
                    .values(status="running", worker=worker, attempts=Job.attempts + 1,
                            lease_until=now + timedelta(seconds=lease_s), updated_at=now)
                ))
                if taken:
                    claimed.append(_record(w.session, w.session.get_one(Job, job_id, populate_existing=True)))
                    if len(claimed) == limit:
                        break
            return claimed

    def renew_lease(self, tenant: str, key: str, worker: str, lease_s: float,
                    progress: float | None = None) -> bool:
        """Extend `worker`'s lease on a running job (and record its progress, 0..1).

        Returns whether cancellation was requested. A worker that lost the job (its lease ran
        out and the job went to another) gets a `ConflictError` and must stop.
        """
        with self.db.write() as w:
            job = _locked_job(w.session, tenant, key)
            _own(job, worker)
            now = utcnow()
            job.lease_until = now + timedelta(seconds=lease_s)
            job.updated_at = now
            if progress is not None:
                job.progress = min(max(progress, 0.0), 1.0)
            return job.cancel_requested

    def finish_job(self, tenant: str, key: str, worker: str, result: dict[str, Any],
                   outputs: Sequence[OutputArtifact | FitOutput] = ()) -> JobRecord:
        """Store the job's outputs and mark it succeeded, in one transaction. If cancellation
        was requested meanwhile, the job ends cancelled instead and the outputs are dropped."""
        return self.finish_jobs(worker, [(tenant, key, result, outputs)])[0]

    def finish_jobs(self, worker: str,
                    ends: Sequence[tuple[str, str, dict[str, Any], Sequence[OutputArtifact | FitOutput]]]) -> list[JobRecord]:
        """`finish_job` for several (tenant, key, result, outputs) in one transaction: all of
        them, or on any error none (the caller may then finish them one by one)."""
        with self.db.write() as w:
            return [self._finish(w, tenant, key, worker, result, outputs) for tenant, key, result, outputs in ends]

    def _finish(self, w: Transaction, tenant: str, key: str, worker: str, result: dict[str, Any],
                outputs: Sequence[OutputArtifact | FitOutput]) -> JobRecord:
        job = _locked_job(w.session, tenant, key)
        _own(job, worker)
        self._drop_scratch_after(w, tenant, key)  # cancelled or succeeded: no retry will need it
        if job.cancel_requested:
            _end(job, "cancelled")
            return _record(w.session, job, tenant)
        user = w.session.scalar(select(User.key).where(User.id == job.user_id)) if job.user_id is not None else None
        for out in outputs:
            if isinstance(out, FitOutput):
                self.fits.save(w, job.tenant_id, out)
                continue
            self.artifacts.insert(w, tenant, out.key, kind=out.kind, media_type=out.media_type, data=out.data,
                                  user=user, derived_from=out.derived_from, meta={**(out.meta or {}), "job": key},
                                  actor=f"worker:{worker}"[:255])
        _end(job, "succeeded", progress=1.0)
        job.result = result
        return _record(w.session, job, tenant, user)

    def fail_job(self, tenant: str, key: str, worker: str, error: dict[str, Any], *,
                 retryable: bool, backoff_s: float = 1.0) -> JobRecord:
        """Record a failed attempt. A retryable failure with attempts left queues the job again
        after `backoff_s` × 2^(attempts − 1) seconds; otherwise the job has failed."""
        with self.db.write() as w:
            job = _locked_job(w.session, tenant, key)
            _own(job, worker)
            job.error = error
            if retryable and job.attempts < job.max_attempts and not job.cancel_requested:
                now = utcnow()
                job.status, job.worker, job.lease_until, job.updated_at = "queued", None, None, now
                job.run_after = now + timedelta(seconds=backoff_s * 2 ** (job.attempts - 1))
            else:
                _end(job, "cancelled" if job.cancel_requested else "failed")
                self._drop_scratch_after(w, tenant, key)
            return _record(w.session, job)

    def cancel_job(self, tenant: str, key: str) -> JobRecord:
        """Cancel a queued job now; ask a running job's worker to stop (it ends as cancelled)."""
        with self.db.write() as w:
            job = _locked_job(w.session, tenant, key)
            if job.status in TERMINAL:
                raise ConflictError(f"job {key!r} has already {job.status}: nothing to cancel")
            if job.status == "queued":
                _end(job, "cancelled")
                self._drop_scratch_after(w, tenant, key)  # a retry-to-be's checkpoint
            else:
                job.cancel_requested = True
                job.updated_at = utcnow()
            return _record(w.session, job)

    def mark_cancelled(self, tenant: str, key: str, worker: str) -> JobRecord:
        """The worker stopped a running job because cancellation was requested."""
        with self.db.write() as w:
            job = _locked_job(w.session, tenant, key)
            _own(job, worker)
            _end(job, "cancelled")
            self._drop_scratch_after(w, tenant, key)
            return _record(w.session, job)

    def requeue_expired(self) -> int:
        """Queue again the running jobs whose lease ran out (their worker died or hung)."""
        with self.db.write() as w:
            return _requeue_expired(w.session, utcnow())


def queue_fit_job(session: Session, tenant_id: int, reason: str) -> str:
    """Inside the caller's transaction: queue a refit of the tenant's behavior space unless one is
    already queued (a running one read the data before this change, so another is queued).
    Returns the key of the queued job."""
    queued = session.scalar(select(Job.key).where(Job.tenant_id == tenant_id, Job.kind == "fit",
                                                  Job.status == "queued"))
    if queued is not None:
        return queued
    now = utcnow()
    job = Job(tenant_id=tenant_id, user_id=None, key=f"fit-{uuid.uuid4().hex}", kind="fit",
              spec={"kind": "fit", "reason": reason[:500]}, status="queued", progress=0.0, attempts=0,
              max_attempts=3, cancel_requested=False, run_after=now, created_at=now, updated_at=now)
    session.add(job)
    session.flush()
    return job.key


def scratch_path(root: Path, tenant: str, key: str) -> Path:
    """A job's scratch folder: named by a digest of (tenant, key), which may hold any character."""
    return root / hashlib.sha256(f"{tenant}\0{key}".encode()).hexdigest()[:32]


def remove_tree(path: Path, attempts: int = 5) -> None:
    """Remove the folder `path` and everything in it, also while a running job writes a
    checkpoint into it. The folder is first renamed away: the job only writes inside an existing
    folder (`save_checkpoint`), so from then on its writes fail and it stops; one write already
    under way may still land in the renamed folder, so its removal is tried again."""
    doomed = path.with_name(f".{path.name}.removing-{uuid.uuid4().hex[:12]}")
    try:
        os.rename(path, doomed)
    except FileNotFoundError:
        return
    except OSError:  # cannot rename (permissions, another file system): remove it where it is
        doomed = path
    for _ in range(attempts):
        shutil.rmtree(doomed, ignore_errors=True)
        if not doomed.exists():
            return
        time.sleep(0.05)


def _requeue_expired(session: Session, now: Any) -> int:
    return rowcount(session.execute(
        update(Job).where(Job.status == "running", Job.lease_until < now)
        .values(status="queued", worker=None, lease_until=None, run_after=now, updated_at=now)
    ))


def _job(session: Session, tenant: str, key: str) -> Job:
    return _find(session, select(Job).join(Tenant, Tenant.id == Job.tenant_id)
                 .where(Tenant.key == tenant, Job.key == key), tenant, key)


def _locked_job(session: Session, tenant: str, key: str) -> Job:
    """The job's row, locked until the transaction ends (`SELECT ... FOR UPDATE`; SQLite, which
    has one writer at a time, ignores it): what a write checks (the worker holding it, its
    status) cannot change under it. Without the lock, on PostgreSQL, a worker whose lease ran out
    read itself as the holder while another worker's claim committed, and then ended the job
    that worker was running; a cancel likewise read `queued` and ended a job just claimed."""
    return _find(session, select(Job).join(Tenant, Tenant.id == Job.tenant_id)
                 .where(Tenant.key == tenant, Job.key == key).with_for_update(of=Job), tenant, key)


def _find(session: Session, query: Select[Job], tenant: str, key: str) -> Job:
    job = session.scalar(query)
    if job is None:
        tenant_id_of(session, tenant)  # names the tenant when that is what is unknown
        raise NotFoundError(f"unknown job {key!r} in tenant {tenant!r}")
    return job


def _own(job: Job, worker: str) -> None:
    if job.status != "running" or job.worker != worker:
        raise ConflictError(f"job {job.key!r} is no longer held by worker {worker!r} (status {job.status})")


def _end(job: Job, status: JobStatus, progress: float | None = None) -> None:
    now = utcnow()
    job.status, job.lease_until, job.finished_at, job.updated_at = status, None, now, now
    if progress is not None:
        job.progress = progress


def _record(session: Session, job: Job, tenant: str | None = None, user: str | None = None) -> JobRecord:
    """The public record of a job row; `tenant`/`user` keys are looked up unless given."""
    tenant = tenant or session.execute(select(Tenant.key).where(Tenant.id == job.tenant_id)).scalar_one()
    if user is None and job.user_id is not None:
        user = session.scalar(select(User.key).where(User.id == job.user_id))
    return JobRecord(key=job.key, tenant=tenant, user=user, kind=job.kind, spec=job.spec, status=job.status,
                     progress=job.progress, attempts=job.attempts, max_attempts=job.max_attempts,
                     cancel_requested=job.cancel_requested, result=job.result, error=job.error, worker=job.worker,
                     created_at=job.created_at, updated_at=job.updated_at, finished_at=job.finished_at,
                     run_after=job.run_after)


__all__ = ["Jobs", "OutputArtifact", "queue_fit_job", "remove_tree", "scratch_path"]
