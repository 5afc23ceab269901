"""How well a generated output fits its user: the user model's score, in the space that fits it.

Best-of-N (`unipgen.orchestrator.best_of`) generates several candidates for one request and keeps
the ones scored highest here. Each modality is embedded by the profile's encoder for it and
compared, by cosine, with a target built from the user's context:

* text: the text encoder's vector of the output vs the user's text-space taste (long-term plus
  `short_term_weight` x short-term preference, normalised: the vector their keywords come from);
* image, video (the mean over up to `VIDEO_FRAMES` evenly spaced frames), 3D (its preview): the
  CLIP image vector vs the user's image-space taste, or, when they have none (no events on items
  with images), the mean CLIP text vector of their positive preference keywords;
* music (``audio``): the CLAP audio vector vs the mean CLAP text vector of the keywords, when the
  profile names a ``clap`` encoder;
* speech: the voice encoder's speaker vector vs the user's voice embedding.

Where there is nothing to compare with (no preference, no keywords, no voice, no CLAP encoder),
the `Target` says so in words and has no vector: nothing is scored rather than a score invented.
A score is a cosine in [-1, 1]: it orders the candidates of one request, and says nothing across
modalities or users. Its `Target.kind` says what it is (`unipgen.tiny.score_kind` of the encoder
that computes it): a mechanical check when that encoder has random weights (the tiny CLIP and
CLAP of the tiny and offline profiles), never a quality figure.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from unipgen.errors import InvalidInputError, UnipgenError
from unipgen.schema.context import Modality, Preferences, UserContext
from unipgen.schema.generation import GeneratedOutput
from unipgen.tiny import MEASURE, ScoreKind, score_kind

#: Frames of a video that are embedded (evenly spaced, first and last included) and averaged.
VIDEO_FRAMES = 8
#: Keywords whose text vectors are averaged into a target (the first ones, best first).
KEYWORDS = 8
#: The encoder role (and space) each modality's outputs are scored in.
SPACES: dict[str, str] = {"text": "text", "image": "image", "video": "image", "3d": "image", "audio": "clap",
                          "speech": "voice"}


@dataclass(frozen=True)
class Target:
    """What one request's outputs are scored against: a unit vector in one encoder role's space,
    and what it is in words; without a vector, `against` says why nothing can be scored."""

    space: str
    against: str
    vector: tuple[float, ...] | None = None
    kind: ScoreKind = MEASURE  # a mechanical check when the space's encoder has random weights

    @property
    def scorable(self) -> bool:
        return self.vector is not None


@dataclass(frozen=True)
class Score:
    """One output's score (None when it could not be embedded, with the reason)."""

    value: float | None
    note: str | None = None


def target(encoders: Any, context: UserContext, short_term_weight: float = 0.5) -> Target:
    """The target of `context`'s outputs; `encoders` is the profile's (`UserModel.encoders`). A
    scorable target's `kind` is that of the encoder its scores come from."""
    found = _target(encoders, context, short_term_weight)
    return replace(found, kind=score_kind(getattr(encoders, found.space))) if found.scorable else found


def _target(encoders: Any, context: UserContext, short_term_weight: float) -> Target:
    space = SPACES[context.modality]
    if space == "voice":
        return _voice_target(context)
    if space == "text":
        return (_taste_target(context, "text", short_term_weight)
                or Target("text", _missing(context, "text-space preference")))
    if space == "image":
        return _taste_target(context, "image", short_term_weight) or _keyword_target(encoders, context, "image")
    return _keyword_target(encoders, context, "clap")


def _voice_target(context: UserContext) -> Target:
    vector = context.conditioning.voice_embedding
    if vector is None:
        return Target("voice", _missing(context, "voice recording"))
    return Target("voice", "the user's voice embedding (mean of their recordings)", _unit_tuple(vector))


def _taste_target(context: UserContext, space: str, short_term_weight: float) -> Target | None:
    found = next((p for p in context.preferences if p.space == space and p.long_term is not None), None)
    if found is None:
        return None
    return Target(space, f"the user's {space}-space preference (long term + {short_term_weight:g} x short term, "
                         f"from {found.events} events)", taste(found, short_term_weight))


def taste(preferences: Preferences, short_term_weight: float = 0.5) -> tuple[float, ...]:
    """The unit taste vector of one space's preferences: long term plus weighted short term."""
    vector = np.asarray(preferences.long_term, np.float64)
    if preferences.short_term is not None:
        vector = vector + short_term_weight * np.asarray(preferences.short_term, np.float64)
    return _unit_tuple(vector)


def _keyword_target(encoders: Any, context: UserContext, space: str) -> Target:
    words = keywords(context)
    if space not in encoders.profile.encoders:
        return Target(space, f"nothing: profile {encoders.profile.name!r} names no {space!r} encoder")
    if not words:
        return Target(space, _missing(context, "preference keyword"))
    vectors = getattr(encoders, space).encode_text(words)
    model = "CLIP" if space == "image" else "CLAP"
    return Target(space, f"the mean {model} text vector of the user's preference keywords: {', '.join(words)}",
                  _unit_tuple(np.asarray(vectors, np.float64).mean(axis=0)))


def keywords(context: UserContext, limit: int = KEYWORDS) -> list[str]:
    """The user's positive preference keywords, in the context's order (text space first)."""
    return list(dict.fromkeys(k.text.strip() for p in context.preferences for k in p.positive_keywords
                              if k.text.strip()))[:limit]


def _missing(context: UserContext, what: str) -> str:
    return f"nothing: user {context.user!r} has no {what} to score against"


def score(encoders: Any, target: Target, modality: Modality, outputs: Sequence[GeneratedOutput]) -> list[Score]:
    """The cosine of each output with `target`, embedded in one encoder call where it can be (an
    output that cannot be read or embedded, say speech too short for the speaker encoder, is
    scored None with the reason)."""
    if target.vector is None:
        return [Score(None, target.against) for _ in outputs]
    scores: list[Score | None] = [None] * len(outputs)
    readable: dict[int, list[Any]] = {}
    for index, output in enumerate(outputs):
        try:
            readable[index] = _inputs(modality, output)
        except UnipgenError as exc:
            scores[index] = Score(None, f"not scored: {exc}")
    encode, goal = getattr(encoders, target.space).encode, np.asarray(target.vector, np.float64)
    try:
        embedded = dict(zip(readable, _embed_all(encode, list(readable.values()))))
        return [s if s is not None else Score(_cosine(embedded[i], goal)) for i, s in enumerate(scores)]
    except UnipgenError:  # an output the encoder refuses: embed each on its own, to know which
        return [s if s is not None else _score_one(encode, readable[i], goal) for i, s in enumerate(scores)]


def judged_output(modality: Modality, outputs: Sequence[GeneratedOutput]) -> GeneratedOutput:
    """The output of a candidate that is scored: a 3D candidate's preview image, else its only one."""
    if modality == "3d":
        return next((o for o in outputs if o.media_type.startswith("image/")), outputs[0])
    return outputs[0]


def _inputs(modality: Modality, output: GeneratedOutput) -> list[Any]:
    """What the encoder reads of one output: its text, its bytes, or a video's frames."""
    if modality == "text":
        return [output.data.decode("utf-8", errors="replace")]
    if modality == "video":
        from unipgen.core.encoders.image import video_frames

        return video_frames(output.data, VIDEO_FRAMES)
    return [output.data]


def _embed_all(encode: Any, inputs: list[list[Any]]) -> list[np.ndarray]:
    flat = [item for items in inputs for item in items]
    if any(isinstance(item, str) and not item.strip() for item in flat):
        raise InvalidInputError("the output is empty text")
    vectors = np.asarray(encode(flat), np.float64)
    bounds = np.cumsum([0, *map(len, inputs)])
    return [vectors[start:end] for start, end in itertools.pairwise(bounds)]


def _score_one(encode: Any, items: list[Any], goal: np.ndarray) -> Score:
    try:
        [vectors] = _embed_all(encode, [items])
    except UnipgenError as exc:
        return Score(None, f"not scored: {exc}")
    return Score(_cosine(vectors, goal))


def _cosine(vectors: np.ndarray, goal: np.ndarray) -> float:
    """Cosine of the mean of `vectors` (an output's frames, or its one vector) with the unit `goal`."""
    mean = vectors.mean(axis=0)
    return float(np.clip(mean @ goal / (np.linalg.norm(mean) or 1.0), -1.0, 1.0))


def _unit_tuple(values: Any) -> tuple[float, ...]:
    vector = np.asarray(values, np.float64)
    return tuple((vector / (np.linalg.norm(vector) or 1.0)).tolist())


__all__ = ["KEYWORDS", "SPACES", "VIDEO_FRAMES", "Score", "Target", "judged_output", "keywords", "score", "target",
           "taste"]
