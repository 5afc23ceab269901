"""The user simulator: role-plays a user from their memory, to judge outputs and to write.

* `Simulator.judge` says which of two candidates (catalog items, or the user's generated text
  outputs) the user would prefer, and why. It scores both under the user's taste exactly as
  recommendations rank (`Recommender.user_taste`: the tenant's fitted behavior space when it
  has a fit, else the text space; the same preference settings and cache), so what the user
  model would recommend is what the simulator prefers. An output is placed in that space from
  its text vector (through the fit's text → factors mapping in the behavior space). The
  reasons are the events with the largest share of the margin, as a recommendation's reasons.
* `Simulator.record_preferences` turns judgements of pairs of the user's text outputs into the
  ``pairwise`` feedback rows DPO training reads, marked ``meta["synthetic"] = True`` and
  ``meta["source"] = "simulator"`` so they stay apart from the user's own choices.
* `Simulator.write` generates what the user would write for a prompt through the generation
  path every text request takes (their text model, their trained adapter when they have one,
  the retrieved history in the prompt): any object with `InlineGenerator.generate`'s signature.

`unipgen eval simulator` (`unipgen.eval.simulator`) measures the judgements against MovieLens
users' later ratings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

import numpy as np

from unipgen.core.behavior_space import BEHAVIOR_SPACE, FitConfig, place_items
from unipgen.core.recommend import Taste
from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError, NotFoundError, UnsupportedMediaError
from unipgen.schema.context import Reason
from unipgen.schema.generation import GenerationOptions
from unipgen.schema.memory import FeedbackIn
from unipgen.schema.simulator import SIMULATOR_SOURCE, Candidate, CandidateKind, PairwiseJudgement, SimulatedText

#: Events named as the reasons of one judgement (as many as a recommendation names).
REASONS = 3
#: Bradley-Terry temperature on the margin of the candidates' projections on the unit taste:
#: a projection margin of 0.1 reads as a probability of 0.73. Fixed, not fitted to any data.
TEMPERATURE = 0.1


class Generates(Protocol):
    """What `Simulator.write` needs of a generator (`unipgen.orchestrator.InlineGenerator` has it)."""

    def generate(self, tenant: str, user: str, modality: Any, instruction: str,
                 options: GenerationOptions | None = None) -> list[Any]: ...


class Simulator:
    """Role-plays the users of a `UserModel`'s store (see the module docstring)."""

    def __init__(self, model: UserModel) -> None:
        self.model = model
        self.store = model.store

    # -- judging ---------------------------------------------------------------------------------

    def judge(self, tenant: str, user: str, first: str, second: str) -> PairwiseJudgement:
        """Which of `first` and `second` (item or output keys) `user` would prefer, and why."""
        return self.judge_pairs(tenant, user, [(first, second)])[0]

    def judge_pairs(self, tenant: str, user: str, pairs: Sequence[tuple[str, str]]) -> list[PairwiseJudgement]:
        """One judgement per pair, the user's taste read once. Refuses, before reading anything,
        a pair that names one key twice; an unknown user, tenant or candidate is `NotFoundError`."""
        check_pairs(pairs)
        recommender = self.model.builder.recommender
        read, found = recommender.user_taste(tenant, user)  # an unknown tenant or user fails here
        if self.model.embed_catalog(tenant):  # items bulk-loaded without a vector got one: a new generation
            read, found = recommender.user_taste(tenant, user)
        keys = list(dict.fromkeys(key for pair in pairs for key in pair))
        texts, kinds, vectors = self._candidates(tenant, user, read.space, keys, read)
        generation = read.fit.generation if read.fit is not None else None
        scores = {key: float(found.query @ vectors[key]) if found is not None else 0.0 for key in keys}
        judged = [self._judgement(user, read.space, generation, found, a, b, texts, kinds, scores, vectors)
                  for a, b in pairs]
        return self._with_reason_texts(tenant, judged)

    def _candidates(self, tenant: str, user: str, space: str, keys: list[str], read: Any
                    ) -> tuple[dict[str, str], dict[str, CandidateKind], dict[str, np.ndarray]]:
        """Text, kind (item or output) and vector in `space` of each key: catalog items first,
        then the user's text outputs; anything else is `NotFoundError` naming it."""
        texts = self.store.catalog.item_texts(tenant, keys)
        vectors = self.store.reads.item_vectors(tenant, space, [k for k in keys if k in texts], read=read)
        kinds: dict[str, CandidateKind] = dict.fromkeys(texts, "item")
        missing = [key for key in keys if key not in texts]
        if missing:
            outputs = self._output_texts(tenant, user, missing)
            texts |= outputs
            kinds |= dict.fromkeys(outputs, "output")
            vectors |= self._output_vectors(tenant, space, outputs)
        for key in keys:
            if key not in vectors:  # an item with no vector in the space the user is judged in
                raise NotFoundError(f"catalog item {key!r} has no vector in the {space!r} space yet (run `unipgen fit`)")
        return texts, kinds, vectors

    def _output_texts(self, tenant: str, user: str, keys: list[str]) -> dict[str, str]:
        """The text of each of `user`'s generated outputs named in `keys`; refuses unknown keys
        and outputs that are not text (nothing to place in the taste's space)."""
        outputs = {a.key: a for a in self.store.artifacts.artifacts(tenant, user, kind="output")}
        unknown = [key for key in keys if key not in outputs]
        if unknown:
            raise NotFoundError(f"unknown candidate {unknown[0]!r}: neither a catalog item of tenant {tenant!r} "
                                f"nor a generated output of user {user!r}")
        for key in keys:
            if not outputs[key].media_type.startswith("text/"):
                raise UnsupportedMediaError(f"output {key!r} is {outputs[key].media_type}: the simulator judges "
                                            "catalog items and text outputs")
        return {key: self.store.artifacts.artifact_blob(tenant, key)[0].decode("utf-8", "replace") for key in keys}

    def _output_vectors(self, tenant: str, space: str, texts: dict[str, str]) -> dict[str, np.ndarray]:
        """Outputs' vectors in `space`: their text vectors, placed in the fitted behavior space
        as a new catalog item would be (`place_items`)."""
        keys = list(texts)
        encoded = self.model.encoders.text.encode([texts[key] if texts[key].strip() else "(empty)" for key in keys])
        if space == BEHAVIOR_SPACE:
            mapping = self.store.fits.fit_mapping(tenant)
            if mapping is None:
                raise NotFoundError(f"tenant {tenant!r} has no text -> behavior mapping to place outputs with")
            encoded = place_items(encoded, mapping[0], FitConfig.from_dict(mapping[1]))
        return dict(zip(keys, np.asarray(encoded, dtype=np.float32)))

    def _judgement(self, user: str, space: str, generation: int | None, found: Taste | None, a: str, b: str,
                   texts: dict[str, str], kinds: dict[str, CandidateKind], scores: dict[str, float],
                   vectors: dict[str, np.ndarray]) -> PairwiseJudgement:
        """The judgement of one pair: the higher score wins; equal scores (or no taste) are undecided."""
        decided = found is not None and scores[a] != scores[b]
        preferred, rejected = (b, a) if decided and scores[b] > scores[a] else (a, b)
        margin = scores[preferred] - scores[rejected]
        norm = float(np.linalg.norm(found.query)) if found is not None else 0.0
        probability = 1.0 / (1.0 + math.exp(-margin / norm / TEMPERATURE)) if decided and norm > 0 else 0.5
        reasons = _reasons(found, vectors[preferred], vectors[rejected]) if decided and found is not None else []

        def candidate(key: str) -> Candidate:
            return Candidate(key=key, kind=kinds[key], text=texts[key], score=round(scores[key], 6))

        return PairwiseJudgement(user=user, space=space, fit_generation=generation,  # type: ignore[arg-type]
                                 preferred=candidate(preferred), rejected=candidate(rejected),
                                 margin=round(margin, 6), probability=round(probability, 6), decided=decided,
                                 reasons=reasons)

    def _with_reason_texts(self, tenant: str, judged: list[PairwiseJudgement]) -> list[PairwiseJudgement]:
        """The judgements with each reason's item text filled in (one query for all of them)."""
        texts = self.store.catalog.item_texts(tenant, list({r.item for j in judged for r in j.reasons}))
        return [j.model_copy(update={"reasons": [r.model_copy(update={"text": texts.get(r.item, "")})
                                                 for r in j.reasons]}) for j in judged]

    # -- synthetic preferences for DPO -----------------------------------------------------------

    def output_pairs(self, tenant: str, user: str) -> list[tuple[str, str]]:
        """Pairs of the user's text outputs that answer the same prompt (the pairs DPO trains
        on) and that no feedback judges yet, oldest first."""
        outputs = [a for a in self.store.artifacts.artifacts(tenant, user, kind="output")
                   if a.media_type.startswith("text/") and (a.meta or {}).get("prompt") is not None]
        judged = {frozenset((f.output, f.rejected)) for f in self.store.events.feedback(tenant, user)
                  if f.rejected is not None}
        pairs = [(a.key, b.key) for a, b in itertools.combinations(outputs, 2)
                 if (a.meta or {})["prompt"] == (b.meta or {})["prompt"]]
        return [pair for pair in pairs if frozenset(pair) not in judged]

    def record_preferences(self, tenant: str, user: str, pairs: Sequence[tuple[str, str]] | None = None
                           ) -> list[FeedbackIn]:
        """Judge pairs of `user`'s outputs (default: `output_pairs`) and store the decided ones
        as synthetic ``pairwise`` feedback, all in one write; returns the rows written. A pair
        naming a catalog item is refused before anything is written."""
        pairs = self.output_pairs(tenant, user) if pairs is None else list(pairs)
        judged = self.judge_pairs(tenant, user, pairs) if pairs else []
        items = [c.key for j in judged for c in (j.preferred, j.rejected) if c.kind != "output"]
        if items:
            raise InvalidInputError(f"{items[0]!r} is a catalog item: synthetic preferences are between "
                                    "generated outputs (feedback rates outputs)")
        rows = synthetic_feedback(judged)
        if rows:
            self.store.events.add_feedback(tenant, rows)
        return rows

    # -- writing ---------------------------------------------------------------------------------

    def write(self, generator: Generates, tenant: str, user: str, prompt: str,
              options: GenerationOptions | None = None) -> SimulatedText:
        """What `user` would write for `prompt`: a text request through the generation path (their
        text model and adapter, their retrieved history in the prompt), stored as their output."""
        if not prompt.strip():
            raise InvalidInputError("the prompt is empty: say what the user is asked to write")
        self.store.users.user_summary(tenant, user)  # an unknown user fails before any model loads
        [output] = generator.generate(tenant, user, "text", prompt, options or GenerationOptions())
        text = self.store.artifacts.artifact_blob(tenant, output.key)[0].decode("utf-8", "replace")
        plan = output.plan
        return SimulatedText(user=user, prompt=prompt, text=text, output=output.key, method=plan.method,
                             adapters=list(plan.adapters), evidence=list(plan.evidence))


def check_pairs(pairs: Sequence[tuple[str, str]]) -> None:
    """Refuses no pair at all, or a pair that names one candidate twice."""
    if not pairs:
        raise InvalidInputError("no pair of candidates to judge")
    for first, second in pairs:
        if first == second:
            raise InvalidInputError(f"the two candidates are the same ({first!r}): name two different ones")


def synthetic_feedback(judgements: Sequence[PairwiseJudgement]) -> list[FeedbackIn]:
    """The ``pairwise`` feedback rows of decided judgements (the preferred output chosen over the
    rejected one), marked synthetic in meta with the simulator's margin and probability."""
    return [FeedbackIn(user=j.user, type="pairwise", output=j.preferred.key, rejected=j.rejected.key,
                       meta={"synthetic": True, "source": SIMULATOR_SOURCE, "margin": j.margin,
                             "probability": j.probability, "space": j.space})
            for j in judgements if j.decided]


def is_synthetic(feedback: FeedbackIn) -> bool:
    """Whether a feedback row was written by the simulator rather than the user."""
    return bool((feedback.meta or {}).get("synthetic"))


def _reasons(found: Taste, preferred: np.ndarray, rejected: np.ndarray) -> list[Reason]:
    """The events with the largest positive share of the margin: each one's term of the
    preferred score minus its term of the rejected one (the terms sum to the margin)."""
    shares = found.coefficients * (found.vectors.astype(np.float64) @ (preferred - rejected).astype(np.float64))
    best = sorted(np.flatnonzero(shares > 0).tolist(), key=lambda i: (-shares[i], i))[:REASONS]
    return [_reason(found.events[i], float(shares[i])) for i in best]


def _reason(event: Any, share: float) -> Reason:
    ts = datetime.fromtimestamp(event.ts, timezone.utc) if isinstance(event.ts, float) else event.ts
    return Reason(item=event.item, text="", type=event.type, value=event.value, ts=ts, contribution=round(share, 6))


__all__ = ["REASONS", "TEMPERATURE", "Generates", "Simulator", "check_pairs", "is_synthetic", "synthetic_feedback"]
