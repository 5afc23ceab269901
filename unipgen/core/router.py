"""Routing: which personalization method serves a request, given what the user's memory holds.

The rules are few and explicit, and every plan carries its reasons, so a caller can see why a
request got an adapter rather than a prompt. Tuning-free methods are chosen when nothing has
been trained yet; a trained adapter wins when one exists for the subject or the user.
"""

from __future__ import annotations

import re
from typing import Any

from unipgen.core.intent import asks_for_recommendation
from unipgen.core.prompts import TOKEN_BUDGETS, compose
from unipgen.schema.context import Keyword, Method, PersonalizationPlan, SubjectAsset, UserContext

_SELF = re.compile(r"\b(me|myself|my face|of me)\b", re.IGNORECASE)
_IMAGE_LIKE = ("image", "video", "3d")

#: The parts of a `UserContext`, besides profile and conditioning, that plans read per modality:
#: text prompts carry retrieved evidence (RAG); speech reads its text as given (its voice comes
#: from conditioning); the others fold in preference keywords.
ALL_PARTS: frozenset[str] = frozenset({"evidence", "preferences"})
CONTEXT_PARTS: dict[str, frozenset[str]] = {"text": frozenset({"evidence"}), "image": frozenset({"preferences"}),
                                            "video": frozenset({"preferences"}), "audio": frozenset({"preferences"}),
                                            "speech": frozenset(), "3d": frozenset({"preferences"})}
#: The conditioning assets plans read per modality, so that an output's lineage names only what
#: its generation could use (forgetting a voice recording must not delete a user's images).
#: "melody": the list of recordings, of which a music request may name one (`options.melody`).
CONDITIONING_ALL: frozenset[str] = frozenset({"subjects", "adapters", "faces", "voices"})
CONDITIONING_PARTS: dict[str, frozenset[str]] = {
    "text": frozenset({"adapters"}), "image": frozenset({"subjects", "adapters", "faces"}),
    "video": frozenset({"subjects", "adapters", "faces"}), "audio": frozenset({"melody"}),
    "speech": frozenset({"voices"}), "3d": frozenset({"subjects"})}


def mentioned_subject(instruction: str, subjects: list[SubjectAsset]) -> SubjectAsset | None:
    """The subject the instruction names: by id, by name, or as "my <class noun>"."""
    text = instruction.lower()
    for subject in subjects:
        names = (subject.key, subject.name, f"my {subject.class_noun}")
        if any(re.search(rf"\b{re.escape(n.lower())}\b", text) for n in names):
            return subject
    return None


def route(context: UserContext, options: dict[str, Any] | None = None) -> PersonalizationPlan:
    """The plan for this context's modality and instruction."""
    options = options or {}
    budget = int(options.get("budget_tokens", TOKEN_BUDGETS[context.modality]))
    if context.modality == "text":
        return _text(context, budget)
    if context.modality == "audio":
        return _plan(context, "prompt_only", ["music: the prompt carries the user's preference keywords"], budget)
    if context.modality == "speech":
        return _speech(context, budget)
    return _visual(context, budget)


def _keywords(context: UserContext) -> tuple[list[Keyword], list[Keyword]]:
    positive = [k for p in context.preferences for k in p.positive_keywords]
    negative = [k for p in context.preferences for k in p.negative_keywords]
    return positive, negative


def _plan(context: UserContext, method: Method, reasons: list[str], budget: int, **kwargs: Any) -> PersonalizationPlan:
    positive, negative = _keywords(context)
    subject = kwargs.pop("subject", None)
    found = context.recommendations
    recommended = found.items if found is not None and _recommending(context) else []
    composed = compose(context.modality, context.instruction, profile=context.profile, evidence=context.evidence,
                       keywords=positive, negative_keywords=negative, budget=budget,
                       subject_phrase=kwargs.pop("subject_phrase", None), use_evidence=method != "prompt_only",
                       recommended=recommended)
    return PersonalizationPlan(
        modality=context.modality, method=method, prompt=composed.prompt, negative_prompt=composed.negative_prompt,
        reasons=reasons, subject=subject, evidence=composed.evidence_keys, recommended=composed.recommended_keys,
        budget_tokens=budget,
        used_tokens=composed.used_tokens, **kwargs,
    )


def _text(context: UserContext, budget: int) -> PersonalizationPlan:
    adapters = [a for a in context.conditioning.adapters if (a.meta or {}).get("modality") == "text"]
    recommending = _recommending(context)
    if adapters:  # the newest: a DPO adapter trained on feedback supersedes an older one
        newest = adapters[-1]
        return _plan(context, "lora", [f"the user has a trained text adapter {newest.key!r} ({newest.method})",
                                       f"{len(context.evidence)} evidence items added to the prompt", *recommending],
                     budget, adapters=[newest.key])
    if recommending:
        return _plan(context, "rag_prompt", recommending, budget)
    if context.evidence:
        return _plan(context, "rag_prompt", [f"{len(context.evidence)} relevant items retrieved from the "
                                             "user's documents and behaviors; no text adapter trained"], budget)
    return _plan(context, "prompt_only", ["nothing relevant retrieved and no adapter: profile only"], budget)


def _recommending(context: UserContext) -> list[str]:
    """The plan's reason for a text request that asks for a recommendation (none otherwise)."""
    found = context.recommendations
    if context.modality != "text" or found is None or not found.items or \
            not asks_for_recommendation(context.instruction):
        return []
    where = {"behavior": f"the fitted behavior space (fit {found.fit_generation}"
                         f"{', stale' if found.stale else ''})",
             "text": "the items' text vectors (no behavior fit yet)",
             "popularity": "popularity (no usable events)"}[found.space]
    return [f"the request asks for a recommendation: {len(found.items)} unseen items recommended from {where} "
            "are in the prompt, not the items the user already rated"]


def _speech(context: UserContext, budget: int) -> PersonalizationPlan:
    if context.conditioning.voice_embedding is not None:
        count = len(context.conditioning.voice_samples)
        return _plan(context, "speaker_embedding", [f"the user has {count} voice recording(s): read in a voice "
                                                    "matched to theirs"], budget)
    return _plan(context, "prompt_only", ["the user has no voice recording: the default voice"], budget)


def _visual(context: UserContext, budget: int) -> PersonalizationPlan:
    subject = mentioned_subject(context.instruction, context.conditioning.subjects)
    if subject is not None:
        return _subject_plan(context, subject, budget)
    if _SELF.search(context.instruction) and context.conditioning.face_embeddings and context.modality != "3d":
        return _plan(context, "ip_adapter", ["the instruction asks for the user; conditioned on their face"], budget)
    return _plan(context, "prompt_only", ["no personal subject named: preference keywords in the prompt"], budget)


def _subject_plan(context: UserContext, subject: SubjectAsset, budget: int) -> PersonalizationPlan:
    if context.modality == "3d":
        return _plan(context, "image_to_3d", [f"subject {subject.key!r} named: 3D from its reference image"],
                     budget, subject=subject.key)
    methods: tuple[Method, ...] = ("lora", "textual_inversion")
    for method in methods:
        trained = [a for a in subject.adapters if a.method == method]
        if trained:
            phrase = f"sks {subject.class_noun}" if method == "lora" else f"<{subject.key}> {subject.class_noun}"
            return _plan(context, method, [f"subject {subject.key!r} named and a {method} adapter is trained"],
                         budget, subject=subject.key, adapters=[trained[0].key], subject_phrase=phrase)
    return _plan(context, "ip_adapter", [f"subject {subject.key!r} named; no adapter trained yet, so tuning-free "
                                         f"IP-Adapter on its {len(subject.image_shas)} reference images"],
                 budget, subject=subject.key)
