"""`create_app`: the FastAPI service. `unipgen serve` runs it with uvicorn.

The app holds one `Service` (store, user model, executor, job runner) made in its lifespan
from `Settings` (the environment, or the settings given), so the same app serves the embedded
default (SQLite, inline jobs) or PostgreSQL with a Ray cluster by configuration alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from unipgen import __version__
from unipgen.api import errors
from unipgen.api.limits import BodyLimit
from unipgen.api.routes import admin, artifacts, chat, describe, jobs, media, simulator, users
from unipgen.api.service import Service
from unipgen.schema.api import ErrorBody, Health
from unipgen.settings import Settings

DESCRIPTION = """\
Personal memory in, personalized generations out. Every route but `/v1/health` takes an API key
(`Authorization: Bearer upg_...`) that scopes it to one tenant: another tenant's users, jobs and
artifacts answer 404, as if they did not exist. Admin routes (`/v1/tenants`) take the admin key.
Errors are JSON `{"code", "message"}` with the codes of docs/errors.md.
"""

#: Error responses every route may give, documented once (docs/errors.md says which code each
#: status carries). 409: a write names an id that exists; 413: a body over its size limit; 503:
#: the shared rate-limit counter (`UNIPGEN_REDIS_URL`) cannot be reached.
_ERRORS: dict[int | str, dict[str, Any]] = {status: {"model": ErrorBody}
                                            for status in (401, 404, 409, 413, 422, 429, 503)}


def create_app(settings: Settings | None = None, *, profile: str = "tiny", run_jobs: bool = True) -> FastAPI:
    """The service over `settings` (read from the environment when None). `run_jobs=False`
    leaves the queue to `unipgen worker` processes."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service.start(settings or Settings(), profile=profile, run_jobs=run_jobs)
        app.state.service = service
        try:
            yield
        finally:
            service.close()

    app = FastAPI(title="unipgen", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  responses=_ERRORS)
    errors.install(app)
    app.add_middleware(BodyLimit)  # request body budgets per kind of route (api/limits.py)
    for module in (admin, users, media, jobs, chat, describe, simulator, artifacts):
        app.include_router(module.router)

    @app.get("/v1/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness: no key needed."""
        return Health(status="ok", version=__version__, executor=app.state.service.executor.name)

    return app
