"""`unipgen chat`: talk with the assistant grounded in a user's memory, the reply streamed as
the model writes it. Each turn (the user's and the reply) is stored as a message of the user."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

import typer

from unipgen.cli.common import Json, Tenant, cache_dir, open_store

#: What ends an interactive chat (besides end of input).
QUIT = {"/quit", "/exit"}


def chat(
    ctx: typer.Context,
    user: str,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Say this one turn and exit.")] = None,
    session: Annotated[str, typer.Option(help="The conversation to continue.")] = "chat",
    profile: Annotated[str, typer.Option(help="Model profile: tiny, cpu, gpu or a .toml path.")] = "tiny",
    seed: Annotated[int, typer.Option(min=0, help="Sampling seed of the first turn (the next turns count up).")] = 0,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096, help="The longest reply.")] = 128,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Chat as USER with the assistant grounded in their memory (profile, documents, messages,
    preferences, their text adapter when trained). Interactive until end of input or /quit;
    one turn with --message (with --json: the stored turn as one object)."""
    from unipgen.core.usermodel import UserModel
    from unipgen.orchestrator import Chat

    if as_json and message is None:
        raise typer.BadParameter("--json needs --message (one turn)")
    with open_store(ctx) as store:
        store.users.user_summary(tenant, user)  # an unknown user fails before the model loads
        assistant = Chat(UserModel(store, profile, cache_dir=cache_dir(ctx)), max_new_tokens=max_new_tokens)
        said = [message] if message is not None else _lines(user)
        for number, text in enumerate(said):
            turn = assistant.turn(tenant, user, text, session=session, seed=seed + number)
            if as_json:
                typer.echo(json.dumps(turn.text().model_dump(mode="json")))
                return
            typer.echo("assistant> ", nl=False)
            for piece in turn:
                typer.echo(piece, nl=False)
            typer.echo("")


def _lines(user: str) -> Iterator[str]:
    """The user's turns as typed, until end of input or /quit."""
    while True:
        try:
            line = input(f"{user}> ")
        except EOFError:
            return
        if line.strip() in QUIT:
            return
        if line.strip():
            yield line
