"""What the user simulator answers: which of two candidates a user would prefer, and what they would write.

`unipgen.core.simulator` role-plays a user from their memory; these are its typed results, plain
JSON like every other answer of the user model (the CLI prints them with ``--json``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from unipgen.schema.context import Method, Reason

#: ``meta["source"]`` of the feedback rows the simulator writes (with ``meta["synthetic"] = True``).
SIMULATOR_SOURCE = "simulator"
#: What a candidate is: a catalog item, or a generated output of the user.
CandidateKind = Literal["item", "output"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Candidate(_Frozen):
    """One of the two things judged: a catalog item or one of the user's generated text outputs,
    with its score under the user's taste (a dot product in `PairwiseJudgement.space`)."""

    key: str
    kind: CandidateKind
    text: str
    score: float


class PairwiseJudgement(_Frozen):
    """Which of two candidates the user would prefer, by how much, and the events behind it.

    `margin` is the preferred candidate's score minus the rejected one's; `reasons` are the
    user's events with the largest share of it (each event's term of the preferred score minus
    its term of the rejected score: the terms of all the user's events sum to `margin`).
    `probability` is a Bradley-Terry reading of the margin (logistic in the margin of the two
    candidates' projections on the unit taste, temperature `unipgen.core.simulator.TEMPERATURE`):
    it says how clear the choice is; it is not calibrated. `decided` is False when the user model cannot tell them
    apart (no usable event, or equal scores): then `preferred` is the first candidate given,
    `margin` 0 and `probability` 0.5."""

    user: str
    space: Literal["behavior", "text"]
    fit_generation: int | None = None
    preferred: Candidate
    rejected: Candidate
    margin: float
    probability: float = Field(ge=0.0, le=1.0)
    decided: bool
    reasons: list[Reason] = Field(default_factory=list)


class SimulatedText(_Frozen):
    """What the user would write for `prompt`: the text of a generated output (artifact `output`)
    of the user's text model, personalized as `method` with the adapters and the retrieved
    evidence (document and item keys) its plan used."""

    user: str
    prompt: str
    text: str
    output: str
    method: Method
    adapters: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)


__all__ = ["SIMULATOR_SOURCE", "Candidate", "CandidateKind", "PairwiseJudgement", "SimulatedText"]
