"""`unipgen simulate USER`: the user simulator (`unipgen.core.simulator`) from the command line.

`--pair A B` says which of two candidates (catalog items or USER's text outputs) the user would
prefer and why; `--prompt TEXT` writes what they would write, through the generation path
(stored as their output like any generation).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from unipgen.cli.common import Json, Tenant, emit, open_store, user_model


def simulate(
    ctx: typer.Context,
    user: str,
    pair: Annotated[tuple[str, str] | None, typer.Option(
        "--pair", help="Two candidates, A B: catalog item keys or USER's text output keys.")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="What the user is asked to write.")] = None,
    profile: Annotated[str, typer.Option(help="Model profile: its text encoder and text model.")] = "tiny",
    seed: Annotated[int, typer.Option(help="--prompt: same seed, same text.")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=4096, help="--prompt: length.")] = 128,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Role-play USER from their memory: which of two candidates they would prefer (--pair A B), or
    what they would write (--prompt TEXT)."""
    from unipgen.core.simulator import Simulator
    from unipgen.errors import InvalidInputError

    if (pair is None) == (prompt is None):
        raise InvalidInputError("give exactly one of --pair A B or --prompt TEXT")
    with open_store(ctx) as store:
        model = user_model(ctx, store, profile, tenant, user)
        simulator = Simulator(model)
        if pair is not None:
            judged = simulator.judge(tenant, user, *pair)
            payload = judged.model_dump(mode="json")
            text = _judgement_text(payload)
        else:
            from unipgen.orchestrator import InlineGenerator
            from unipgen.schema.generation import GenerationOptions

            options = GenerationOptions(seed=seed, max_new_tokens=max_new_tokens)
            written = simulator.write(InlineGenerator(model), tenant, user, prompt or "", options)
            payload = written.model_dump(mode="json")
            text = f"{user} would write ({written.method}, output {written.output}):\n{written.text}"
    emit(payload, as_json, text)


def _judgement_text(payload: dict[str, Any]) -> str:
    preferred, rejected = payload["preferred"], payload["rejected"]
    if not payload["decided"]:
        return (f"{payload['user']}'s memory cannot tell {preferred['key']} and {rejected['key']} apart "
                "(no usable event, or equal scores)")
    lines = [f"{payload['user']} would prefer {preferred['key']} ({preferred['text']}) over {rejected['key']} "
             f"({rejected['text']}): margin {payload['margin']:.4f}, p {payload['probability']:.2f} "
             f"({payload['space']} space)"]
    lines += [f"  because of {r['type']} {r['item']} ({r['text']})" + (f" = {r['value']}" if r["value"] is not None else "")
              + f": {r['contribution']:+.4f}" for r in payload["reasons"]]
    return "\n".join(lines)
