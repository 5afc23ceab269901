"""The HTTP service: run it (`serve`) and manage its API keys (`keys`)."""

from __future__ import annotations

from typing import Annotated

import typer

from unipgen.cli.common import Json, Tenant, emit, open_store, settings

keys_app = typer.Typer(help="Create, list and revoke the service's API keys.", no_args_is_help=True)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on (default: loopback only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    profile: Annotated[str, typer.Option(help="Model profile: tiny, cpu or gpu.")] = "tiny",
    run_jobs: Annotated[bool, typer.Option(help="Run queued jobs in this process (else: `unipgen worker`).")] = True,
) -> None:
    """Start the HTTP service (FastAPI + uvicorn) on the configured store and executor."""
    import uvicorn

    from unipgen.api import create_app

    uvicorn.run(create_app(settings(ctx), profile=profile, run_jobs=run_jobs), host=host, port=port)


@keys_app.command("create")
def keys_create(ctx: typer.Context, name: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    """A new API key for the tenant (created if new). The key is printed once."""
    with open_store(ctx) as store:
        store.users.ensure_tenant(tenant)
        created = store.keys.create_api_key(tenant, name)
    emit({"tenant": tenant, "prefix": created.record.prefix, "name": name, "key": created.key}, as_json,
          f"{created.key}\n(tenant {tenant!r}, key {created.record.prefix}: store it now, it is not shown again)")


@keys_app.command("list")
def keys_list(ctx: typer.Context, tenant: Tenant = "default", as_json: Json = False) -> None:
    with open_store(ctx) as store:
        keys = store.keys.list_api_keys(tenant)
    rows = [{"prefix": k.prefix, "name": k.name, "created_at": k.created_at.isoformat(),
             "revoked": k.revoked_at is not None} for k in keys]
    emit({"tenant": tenant, "keys": rows}, as_json,
          "\n".join(f"{r['prefix']}  {r['name']}{'  (revoked)' if r['revoked'] else ''}" for r in rows))


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, prefix: str, tenant: Tenant = "default", as_json: Json = False) -> None:
    with open_store(ctx) as store:
        record = store.keys.revoke_api_key(tenant, prefix)
    emit({"tenant": tenant, "prefix": prefix, "revoked_at": str(record.revoked_at)}, as_json,
          f"key {prefix} of {tenant!r} revoked")
