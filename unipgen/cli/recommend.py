"""Recommendations: fit the tenant's behavior space (`fit`) and rank items for a user (`recommend`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from unipgen.cli.common import (
    Executor,
    JobId,
    Json,
    Tenant,
    Wait,
    cache_dir,
    emit,
    make_runner,
    open_store,
    user_model,
)


def recommend(
    ctx: typer.Context,
    user: str,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="How many items.")] = 10,
    diversity: Annotated[float, typer.Option(min=0.0, max=1.0, help="0: best first; up to 1: less of the same "
                                                                       "(maximal marginal relevance).")] = 0.0,
    include_seen: Annotated[bool, typer.Option("--include-seen", help="Also items USER already acted on.")] = False,
    kind: Annotated[str | None, typer.Option(help="Only items whose meta has this 'kind'.")] = None,
    profile: Annotated[str, typer.Option(help="Model profile (its text encoder, while the tenant has no fit).")] = "tiny",
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Items USER is likeliest to want next, with the events behind each (`unipgen fit` first for the
    behavior space; before a fit, the items' text vectors rank)."""
    with open_store(ctx) as store:
        model = user_model(ctx, store, profile, tenant, user)
        found = model.recommend(tenant, user, k=k, diversity=diversity, include_seen=include_seen, kind=kind)
    payload = found.model_dump(mode="json")
    where = {"behavior": f"behavior space, fit {found.fit_generation}" + (" (stale)" if found.stale else ""),
             "text": "text space (no fit yet: run `unipgen fit`)", "popularity": "popularity (no usable events)"}
    lines = [f"{len(found.items)} items for {user} from the {where[found.space]}:"]
    for n, item in enumerate(found.items, 1):
        because = "; ".join(r.text for r in item.reasons)
        lines.append(f"{n:3}. {item.text}  [{item.score:.3f}]" + (f"\n       because: {because}" if because else ""))
    emit(payload, as_json, "\n".join(lines))


def fit(
    ctx: typer.Context,
    setting: Annotated[list[str] | None, typer.Option("--set", help="A fit setting to change, KEY=VALUE (JSON "
                                                                    "value), e.g. --set dim=128; see docs/usermodel.md.")] = None,
    history: Annotated[bool, typer.Option("--history", help="List the tenant's fits instead of fitting.")] = False,
    profile: Annotated[str, typer.Option(help="Model profile whose text encoder embeds items that lack a vector.")] = "tiny",
    executor: Executor = None, job_id: JobId = None, wait: Wait = True,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Fit the tenant's behavior space from all its events, as a job (the space recommendations rank in)."""
    from unipgen.core.usermodel import UserModel
    from unipgen.errors import error_from
    from unipgen.schema.jobs import FitSpec

    with open_store(ctx) as store:
        if history:
            fits = [f.model_dump(mode="json", exclude={"stats": {"popular"}}) for f in store.fits.fits(tenant)]
            text = "\n".join(f"fit {f['generation']}: {f['status']}, {f['stats'].get('users')} users, "
                             f"{f['stats'].get('events')} events, {f['created_at']}" for f in fits) or "no fit yet"
            emit({"tenant": tenant, "fits": fits}, as_json, text)
            return
        spec = FitSpec(config=_fit_settings(setting or []), reason="on demand (unipgen fit)")
        if not wait:
            job = store.jobs.submit_job(tenant, None, spec.model_dump(mode="json"), key=job_id)
        else:
            runner = make_runner(ctx, UserModel(store, profile, cache_dir=cache_dir(ctx)), executor)
            try:
                job = runner.wait(tenant, runner.submit(tenant, None, spec, key=job_id).key)
            finally:
                runner.shutdown()
            if job.status == "failed":
                raise error_from(job.error or {})
        current = store.fits.current_fit(tenant) if job.status == "succeeded" else None
    payload = {"tenant": tenant, "job": job.key, "status": job.status,
               "fit": current.model_dump(mode="json", exclude={"stats": {"popular"}}) if current else None}
    text = f"job {job.key}: {job.status}"
    if current is not None:
        stats = current.stats
        text = (f"fit {current.generation}: {stats['users']} users, {stats['events']} events, {stats['items']} items "
                f"({stats['items_with_events']} with events), {stats['factor_dim']} factors + content = "
                f"{stats['dim']}-d, {stats['seconds']} s")
    emit(payload, as_json, text)


def _fit_settings(pairs: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs as a dict (values read as JSON, else kept as strings)."""
    from unipgen.errors import InvalidInputError

    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set dim=128")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings
