"""Best-of-N by the user model: several candidates for one request, the best ones kept.

`options.best_of = N` asks for N x `num_outputs` candidates: the same request with seeds
seed, seed+1, ..., one output each (candidate i is what a request with seed + i and
`num_outputs = 1` gives, to the last bit of a pixel: the image backend runs the candidates in one
pipeline call, which rounds a little differently from a lone one). They go to the backend in one
call, as one batch where the backend batches requests. Each is scored by the user model (`unipgen.core.scoring`: text against the
text-space taste, pictures against the image-space taste or the keywords in CLIP space, music
against the keywords in CLAP space, speech against the user's voice), and the `num_outputs`
best are kept (`best_of_keep = "best"`), or all of them, best first (``"all"``).

Every path that stores outputs goes through here, once: `plan` when a generation is prepared
(the requests the executor's work runs), `select` when its outputs become artifacts
(`inline.output_artifacts`, used by the inline generator and by every executor's `finish`).

Each kept output's meta gets ``best_of``: N, its rank, its score, the space and what it was
scored against, and every candidate's seed and score; and ``score_kinds["best_of"]``: what those
scores are (a mechanical check when the encoder that computed them has random weights). When there is nothing to score against
(no preference, no voice, no CLAP encoder in the profile), "best" generates the request as
with ``best_of = 1`` and the meta says why; "all" generates every candidate, in seed order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from unipgen.core import scoring
from unipgen.core.scoring import Score, Target
from unipgen.core.usermodel import UserModel
from unipgen.schema.context import Modality
from unipgen.schema.generation import GeneratedOutput, GenerationOptions, GenerationRequest


@dataclass(frozen=True)
class Candidates:
    """The backend requests of one generation, and the target their outputs are scored against
    (None: ``best_of = 1``, nothing to choose)."""

    requests: list[GenerationRequest]
    target: Target | None = None


def needs_preferences(modality: Modality, options: GenerationOptions) -> bool:
    """Whether the context must carry preference vectors its plan does not read: a text request
    with ``best_of > 1`` is scored against the user's text-space taste."""
    return options.best_of > 1 and scoring.SPACES[modality] == "text"


def plan(model: UserModel, request: GenerationRequest) -> Candidates:
    """The requests to run for `request`: itself, or its candidates (one per seed)."""
    options = request.options
    if options.best_of == 1:
        return Candidates([request])
    goal = scoring.target(model.encoders, request.context, model.builder.config.preference.short_term_weight)
    if not goal.scorable and options.best_of_keep == "best":
        return Candidates([request], goal)  # nothing to choose by: what best_of = 1 gives
    count = options.best_of * options.num_outputs
    return Candidates([_candidate(request, options.seed + index) for index in range(count)], goal)


def _candidate(request: GenerationRequest, seed: int) -> GenerationRequest:
    options = request.options.model_copy(update={"seed": seed, "num_outputs": 1, "best_of": 1})
    return request.model_copy(update={"options": options})


def select(model: UserModel, request: GenerationRequest, candidates: Candidates,
           produced: Sequence[Sequence[GeneratedOutput]]) -> list[GeneratedOutput]:
    """The outputs to store, from the backend's outputs of `candidates.requests` (in order): the
    best `num_outputs` candidates' (or all, best first), each with meta ``best_of``."""
    if len(produced) != len(candidates.requests):
        raise ValueError(f"{len(candidates.requests)} candidate requests but outputs of {len(produced)}")
    goal = candidates.target
    if goal is None:
        return list(produced[0])
    if not goal.scorable and request.options.best_of_keep == "best":  # generated as with best_of = 1
        return [_with_meta(output, _unscored(request.options, goal)) for output in produced[0]]
    modality = request.context.modality
    scores = scoring.score(model.encoders, goal, modality, [scoring.judged_output(modality, o) for o in produced])
    ranked = _ranked(scores)
    keep = ranked if request.options.best_of_keep == "all" else ranked[: request.options.num_outputs]
    summary = _summary(request.options, goal, candidates.requests, scores, produced)
    return [_with_meta(output, {**summary, **_place(rank, index, candidates.requests, scores)}, goal.kind)
            for rank, index in enumerate(keep, start=1) for output in produced[index]]


def _ranked(scores: Sequence[Score]) -> list[int]:
    """Candidate indexes, best first: highest score, then lowest seed; unscored ones last."""
    return sorted(range(len(scores)), key=lambda i: (scores[i].value is None, -(scores[i].value or 0.0), i))


def _summary(options: GenerationOptions, goal: Target, requests: Sequence[GenerationRequest],
             scores: Sequence[Score], produced: Sequence[Sequence[GeneratedOutput]]) -> dict[str, Any]:
    """What every kept output of one request records about the choice."""
    distinct = len({tuple(o.data for o in outputs) for outputs in produced})
    return {"n": options.best_of, "candidates": len(requests), "keep": options.best_of_keep,
            "scored": goal.scorable, "space": goal.space, "against": goal.against, "distinct": distinct,
            "scores": [{"seed": r.options.seed, "score": s.value} for r, s in zip(requests, scores)]}


def _place(rank: int, index: int, requests: Sequence[GenerationRequest], scores: Sequence[Score]) -> dict[str, Any]:
    place = {"rank": rank, "seed": requests[index].options.seed, "score": scores[index].value}
    return place | ({"note": scores[index].note} if scores[index].note else {})


def _unscored(options: GenerationOptions, goal: Target) -> dict[str, Any]:
    return {"n": options.best_of, "candidates": options.num_outputs, "keep": options.best_of_keep, "scored": False,
            "space": goal.space, "against": goal.against,
            "note": "nothing to score against: generated as with best_of = 1"}


def _with_meta(output: GeneratedOutput, best_of: dict[str, Any], kind: str | None = None) -> GeneratedOutput:
    meta = {**output.meta, "best_of": best_of}
    if kind is not None:  # scores were computed: say what they are, beside the output's other scores
        meta["score_kinds"] = {**output.meta.get("score_kinds", {}), "best_of": kind}
    return output.model_copy(update={"meta": meta})


__all__ = ["Candidates", "needs_preferences", "plan", "select"]
