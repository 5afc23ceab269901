"""`unipgen describe`: a caption of one of a user's images, or the answer to a question about it,
written in the user's style and stored as an output with its lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from unipgen.cli.common import Json, Tenant, emit, open_store, user_model


def describe(
    ctx: typer.Context,
    user: str,
    artifact: Annotated[str | None, typer.Option(help="One of USER's stored image outputs (its key).")] = None,
    subject: Annotated[str | None, typer.Option(help="One of USER's subjects: its first photo.")] = None,
    file: Annotated[Path | None, typer.Option(help="A photo file (read, not stored).", exists=True, dir_okay=False,
                                              readable=True)] = None,
    question: Annotated[str | None, typer.Option("--question", "-q", help="Ask this about the image "
                                                                          "(default: a caption).")] = None,
    profile: Annotated[str, typer.Option(help="Model profile: tiny, offline, cpu, gpu or a .toml path.")] = "tiny",
    seed: Annotated[int, typer.Option(min=0, help="Sampling seed of the text model.")] = 0,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=512, help="The longest description.")] = 60,
    tenant: Tenant = "default", as_json: Json = False,
) -> None:
    """Describe an image for USER (--artifact KEY, --subject S or --file PHOTO): a caption, or the
    answer to --question, by the profile's image-to-text model, rewritten by its text model in
    USER's style (their retrieved documents in the prompt, their text adapter when trained)."""
    from unipgen.orchestrator import Describer

    request: dict[str, Any] = {"artifact": artifact, "subject": subject, "question": question, "seed": seed,
                               "max_new_tokens": max_new_tokens, "file": file.name if file is not None else None}
    with open_store(ctx) as store:
        model = user_model(ctx, store, profile, tenant, user)
        data = None
        if file is not None:  # read no further than the limit: the describer refuses what is over it
            with file.open("rb") as handle:
                data = handle.read(store.content.max_blob_bytes + 1)
        described = Describer(model).describe(tenant, user, request, data)
    payload = described.model_dump(mode="json")
    emit(payload, as_json, description_text(payload))


def description_text(payload: dict[str, Any]) -> str:
    """What `unipgen describe` prints without --json: the text, then where it came from."""
    image = payload["image"]
    lines = [payload["text"], "",
             f"  image: {image['source']} {image['key']!r} ({image['media_type']}, sha256 {image['sha256'][:12]})",
             f"  image model: {payload['caption']!r}" + (f", answer {payload['answer']!r}" if payload["answer"] else ""),
             f"  method: {payload['method']}; evidence: {', '.join(payload['evidence']) or 'none'}",
             f"  stored as {payload['key']}, derived from {', '.join(payload['derived_from'])}"]
    if payload["models"].get("random_weights"):
        lines.append("  (random-weight models: the words carry no meaning; the code path is the real one)")
    return "\n".join(lines)
