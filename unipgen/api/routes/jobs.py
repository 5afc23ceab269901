"""Generations, training, protections of photos and fits as jobs: create (202, idempotent by
`job_id`), poll, cancel, and follow progress as server-sent events; the tenant's fits of its
behavior space."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from unipgen.api.deps import CallerDep, ServiceDep
from unipgen.errors import NotFoundError
from unipgen.schema.api import ErrorBody, FitCreate, GenerationCreate, ProtectionCreate, TrainingCreate
from unipgen.schema.jobs import FitSpec, GenerateSpec, JobRecord, JobStatus, TrainSpec
from unipgen.schema.memory import FitRecord

router = APIRouter(prefix="/v1", tags=["jobs"])
SSE_POLL_S = 0.25


@router.post("/users/{user}/generations", status_code=status.HTTP_202_ACCEPTED, response_model=JobRecord)
def create_generation(user: str, body: GenerationCreate, svc: ServiceDep, who: CallerDep) -> JobRecord:
    """Queue a personalized generation; poll `GET /v1/jobs/{key}` or follow its events."""
    spec = GenerateSpec(modality=body.modality, instruction=body.instruction, options=body.options)
    return svc.queue(who.tenant, who.actor, user, spec, body.job_id, "generate", {"modality": spec.modality})


@router.post("/users/{user}/trainings", status_code=status.HTTP_202_ACCEPTED, response_model=JobRecord,
             responses={403: {"model": ErrorBody, "description": "`consent_required`: the user has not consented "
                                                                 "to training on their photos."}})
def create_training(user: str, body: TrainingCreate, svc: ServiceDep, who: CallerDep) -> JobRecord:
    """Queue the training of a personal adapter (LoRA, textual inversion, DPO...). A method that
    learns from a subject's photos needs the user's consent to training (403 `consent_required`),
    checked again when the job runs."""
    from unipgen.orchestrator.training import require_training_consent

    require_training_consent(svc.store, who.tenant, user, body.method)
    spec = TrainSpec(method=body.method, subject=body.subject, steps=body.steps, seed=body.seed)
    return svc.queue(who.tenant, who.actor, user, spec, body.job_id, "train", {"method": body.method})


@router.post("/users/{user}/protections", status_code=status.HTTP_202_ACCEPTED, response_model=JobRecord)
def create_protection(user: str, body: ProtectionCreate, svc: ServiceDep, who: CallerDep) -> JobRecord:
    """Protect a subject's photos (or a face photo) from fine-tuning (Anti-DreamBooth): the job
    stores protected copies, which the photo downloads then serve."""
    from unipgen.orchestrator.protection import protect_spec

    spec = protect_spec(svc.settings, subject=body.subject, face=body.face, seed=body.seed)
    return svc.queue(who.tenant, who.actor, user, spec, body.job_id, "protect", {"target": ":".join(spec.target)})


@router.post("/fits", status_code=status.HTTP_202_ACCEPTED, response_model=JobRecord)
def create_fit(body: FitCreate, svc: ServiceDep, who: CallerDep) -> JobRecord:
    """Queue a fit of the tenant's behavior space from all its events (a job of the tenant: no user)."""
    from unipgen.core.behavior_space import fit_config_for

    fit_config_for(svc.store, who.tenant, body.config)  # a bad setting is refused now (422), not when it runs
    spec = FitSpec(config=body.config, reason="on demand (POST /v1/fits)")
    return svc.queue(who.tenant, who.actor, None, spec, body.job_id, "fit")


@router.get("/fits", response_model=list[FitRecord])
def list_fits(svc: ServiceDep, who: CallerDep) -> list[FitRecord]:
    """The tenant's fits, newest first: the current (or stale) one, then replaced ones (settings and figures)."""
    return svc.store.fits.fits(who.tenant)


@router.get("/fits/current", response_model=FitRecord)
def current_fit(svc: ServiceDep, who: CallerDep) -> FitRecord:
    """The fit recommendations rank in, with the events written since (the refit policy counts them)."""
    found = svc.store.fits.current_fit(who.tenant)
    if found is None:
        raise NotFoundError(f"tenant {who.tenant!r} has no fit yet: POST /v1/fits")
    return found


@router.get("/jobs", response_model=list[JobRecord])
def list_jobs(svc: ServiceDep, who: CallerDep, user: str | None = None, job_status: Annotated[
        JobStatus | None, Query(alias="status")] = None, limit: int = Query(default=50, ge=1, le=1000)) -> list[JobRecord]:
    """The tenant's jobs, newest first."""
    return svc.store.jobs.jobs(who.tenant, user=user, status=job_status, limit=limit)


@router.get("/jobs/{key}", response_model=JobRecord)
def get_job(key: str, svc: ServiceDep, who: CallerDep) -> JobRecord:
    return svc.store.jobs.job(who.tenant, key)


@router.post("/jobs/{key}/cancel", response_model=JobRecord)
def cancel_job(key: str, svc: ServiceDep, who: CallerDep) -> JobRecord:
    """Cancel a queued job now, or ask a running one to stop (it ends as cancelled)."""
    return svc.executor.cancel(who.tenant, key)


@router.get("/jobs/{key}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "`progress` events (the job record as JSON) until one `end` event."}})
async def job_events(key: str, svc: ServiceDep, who: CallerDep) -> StreamingResponse:
    """Server-sent events: the job record each time it changes (`event: progress`), then once
    more when it ends (`event: end`)."""
    first = await run_in_threadpool(svc.store.jobs.job, who.tenant, key)  # a 404 before the stream starts
    return StreamingResponse(_events(svc, who.tenant, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _events(svc: ServiceDep, tenant: str, job: JobRecord) -> AsyncIterator[str]:
    last = None
    while True:
        state = (job.status, job.progress, job.attempts)
        if job.done:
            yield _sse("end", job)
            return
        if state != last:
            yield _sse("progress", job)
            last = state
        await asyncio.sleep(SSE_POLL_S)
        job = await run_in_threadpool(svc.store.jobs.job, tenant, job.key)


def _sse(event: str, job: JobRecord) -> str:
    return f"event: {event}\ndata: {json.dumps(job.model_dump(mode='json'))}\n\n"
