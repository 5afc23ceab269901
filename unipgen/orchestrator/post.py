"""A multi-modal post: one generation job whose spec names several modalities (text and image,
say), made from one plan and stored as one group.

Why one job rather than one job per modality stitched together: the post then runs once
(exactly-once, like any job: its outputs and the group are stored in the transaction that marks
it succeeded, so a retry never stores half a post), on any executor, through the one generation
path (`prepare` → the executor's work → `finish` in `unipgen.orchestrator.jobs`), and the text
can be written from the image made in the same run.

The steps:
1. `prepare_post`: each modality's context and plan, as for a single request (`prepared_from`),
   with one seed and the lead modality's preferences (the first one asked other than text), so
   every prompt folds in the same keywords and names the same subject.
2. `run_post` (in the executor's work): every other modality first, then the text. When both
   text and image are asked, the image's first output is captioned (`Describer.read`) and the
   text request is re-planned with the caption in its instruction (`describe.instruction`).
3. `post_artifacts` (in the job's end): each part's outputs as a single request would store
   them, with ``meta["group"]``; the text derived from the image it describes; then the group's
   own artifact (kind ``group``, key = the group id, a JSON manifest derived from every member),
   with the consistency score (CLIP cosine of the text and the image) and what that score is
   (``score_kinds``: a mechanical check when the CLIP has random weights).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, UnipgenError
from unipgen.memory.jobs import OutputArtifact
from unipgen.orchestrator.describe import instruction as caption_instruction
from unipgen.orchestrator.generation import PreparedGeneration, embed_pending, output_artifacts, prepared_from
from unipgen.schema.generation import GeneratedOutput
from unipgen.schema.jobs import GenerateSpec
from unipgen.tiny import score_kind

#: The kind of a group's own artifact, and its media type.
GROUP_KIND = "group"
GROUP_MEDIA_TYPE = "application/json"


@dataclass(frozen=True)
class PreparedPost:
    """A post's parts, in the order they run (text last), and its group id."""

    group: str
    instruction: str
    parts: tuple[PreparedGeneration, ...]

    @property
    def captioned(self) -> bool:
        """Whether the text is written from the image's caption (both were asked)."""
        return {"text", "image"} <= {part.request.context.modality for part in self.parts}


@dataclass(frozen=True)
class PostOutputs:
    """What a post's run made: the parts as run (the text re-planned from the caption), each
    part's outputs (one list per request), and the caption."""

    parts: tuple[PreparedGeneration, ...]
    produced: tuple[list[list[GeneratedOutput]], ...]
    caption: str | None


def prepare_post(model: UserModel, tenant: str, user: str, spec: GenerateSpec) -> PreparedPost:
    """Every modality's context and plan, with one seed and the lead modality's preferences."""
    options = spec.options
    if options.melody is not None and "audio" not in spec.modalities:
        raise InvalidInputError("melody applies to music (audio) requests; this post asks none")
    embed_pending(model, tenant, [user])
    order = sorted(spec.modalities, key=lambda m: m == "text")  # text last: it may read the image
    built = model.contexts(tenant, [(user, m, spec.instruction) for m in order], for_generation=True)
    contexts = []
    for context in built:
        if isinstance(context, Exception):
            raise context
        contexts.append(context)
    lead = contexts[0]  # the first modality other than text (a post names at least two)
    parts = tuple(prepared_from(model, c.model_copy(update={"preferences": lead.preferences}),
                                options if c.modality == "audio" else options.model_copy(update={"melody": None}))
                  for c in contexts)
    return PreparedPost(f"post-{uuid.uuid4().hex[:16]}", spec.instruction, parts)


def run_post(model: UserModel, post: PreparedPost, generate: Callable[[PreparedGeneration], list[list[GeneratedOutput]]],
             caption: Callable[[bytes], str]) -> PostOutputs:
    """Run the parts in order with `generate` (the executor's backend call); with text and
    image, caption the image (`caption`) and write the text from it."""
    parts: list[PreparedGeneration] = []
    produced: list[list[list[GeneratedOutput]]] = []
    said: str | None = None
    for part in post.parts:
        if part.request.context.modality == "text" and post.captioned:
            said = caption(_first_image(parts, produced).data)
            context = part.request.context.model_copy(update={"instruction": post_text_instruction(post.instruction,
                                                                                                   said)})
            part = replace(prepared_from(model, context, part.request.options), sources=part.sources)
        parts.append(part)
        produced.append(generate(part))
    return PostOutputs(tuple(parts), tuple(produced), said)


def post_text_instruction(asked: str, caption: str) -> str:
    """The text request of a post with an image: the user's instruction, then the image's words."""
    return f"{asked}\n{caption_instruction(caption)}"


def _first_image(parts: list[PreparedGeneration], produced: list[list[list[GeneratedOutput]]]) -> GeneratedOutput:
    for part, outputs in zip(parts, produced, strict=True):
        if part.request.context.modality == "image":
            return outputs[0][0]
    raise InvalidInputError("a post's text is written from its image, and no image was made")


def post_artifacts(model: UserModel, post: PreparedPost, made: PostOutputs) -> list[OutputArtifact]:
    """The members of the group (each part's outputs with ``meta["group"]``; the text derived
    from the image), then the group's own artifact, derived from every member."""
    members: list[OutputArtifact] = []
    images: list[OutputArtifact] = []
    for part, produced in zip(made.parts, made.produced, strict=True):
        modality = part.request.context.modality
        extra = [("artifact", images[0].key)] if modality == "text" and made.caption is not None and images else []
        for out in output_artifacts(model, part, produced):
            meta = {**(out.meta or {}), "group": post.group}
            if extra:
                meta["caption"] = made.caption
            member = replace(out, meta=meta, derived_from=[*out.derived_from, *extra])
            members.append(member)
            if modality == "image":
                images.append(member)
    return [*members, _group_artifact(model, post, made, members)]


def _group_artifact(model: UserModel, post: PreparedPost, made: PostOutputs,
                    members: list[OutputArtifact]) -> OutputArtifact:
    consistency, kind = consistency_score(model, members)
    manifest: dict[str, Any] = {
        "group": post.group, "instruction": post.instruction,
        "modalities": [part.request.context.modality for part in made.parts],
        "seed": made.parts[0].request.options.seed, "keywords": group_keywords(made.parts[0]),
        "subject": made.parts[0].request.plan.subject, "caption": made.caption,
        "plans": {part.request.context.modality: part.request.plan.model_dump(mode="json") for part in made.parts},
        "artifacts": [{"key": m.key, "media_type": m.media_type, "modality": (m.meta or {}).get("modality")}
                      for m in members],
        "consistency": consistency, "score_kinds": {"consistency": kind},
    }
    return OutputArtifact(key=post.group, kind=GROUP_KIND, media_type=GROUP_MEDIA_TYPE,
                          data=json.dumps(manifest, sort_keys=True).encode(),
                          derived_from=[("artifact", m.key) for m in members], meta=manifest)


def group_keywords(lead: PreparedGeneration) -> list[str]:
    """The preference keywords every part of the post shares (the lead modality's)."""
    return list(dict.fromkeys(k.text for p in lead.request.context.preferences for k in p.positive_keywords))


def consistency_score(model: UserModel, members: list[OutputArtifact]) -> tuple[float | None, str | None]:
    """CLIP cosine of the post's first text and first image (None when either is missing or
    unreadable), and its kind (`unipgen.tiny.score_kind` of the profile's image encoder)."""
    text = next((m for m in members if (m.meta or {}).get("modality") == "text"), None)
    image = next((m for m in members if (m.meta or {}).get("modality") == "image"), None)
    if text is None or image is None or not (text.data or b"").strip():
        return None, None
    encoder = model.encoders.image
    try:
        [t] = encoder.encode_text([(text.data or b"").decode("utf-8", errors="replace")])
        [i] = encoder.encode([image.data])
    except UnipgenError:
        return None, None
    norm = float((t @ t) ** 0.5 * (i @ i) ** 0.5) or 1.0
    return round(float(t @ i) / norm, 6), score_kind(encoder)


def post_result(post: PreparedPost, made: PostOutputs, outputs: list[OutputArtifact]) -> dict[str, Any]:
    """A post job's result: its members' keys, the lead plan, the group and its manifest's summary."""
    group = outputs[-1].meta or {}
    return {"artifacts": [o.key for o in outputs[:-1]], "plan": made.parts[0].request.plan.model_dump(mode="json"),
            "group": post.group, "plans": group["plans"], "caption": made.caption,
            "consistency": group["consistency"], "score_kinds": group["score_kinds"]}


__all__ = ["GROUP_KIND", "GROUP_MEDIA_TYPE", "PostOutputs", "PreparedPost", "consistency_score", "group_keywords",
           "post_artifacts", "post_result", "post_text_instruction", "prepare_post", "run_post"]
