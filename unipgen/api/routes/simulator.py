"""The user simulator (`unipgen.core.simulator`): which of two candidates a user would prefer,
and synthetic pairwise preferences for DPO. What a user would write is a text generation
(`POST /v1/users/{user}/generations`, modality text): the same path the simulator's `write` takes."""

from __future__ import annotations

from fastapi import APIRouter, status

from unipgen.api.deps import CallerDep, ServiceDep
from unipgen.core.simulator import Simulator
from unipgen.schema.api import JudgementRequest, PreferencesRequest
from unipgen.schema.memory import FeedbackIn
from unipgen.schema.simulator import PairwiseJudgement

router = APIRouter(prefix="/v1", tags=["simulator"])


@router.post("/users/{user}/judgements", response_model=PairwiseJudgement)
def judge(user: str, body: JudgementRequest, svc: ServiceDep, who: CallerDep) -> PairwiseJudgement:
    """Which of two candidates the user would prefer, by how much, and the events behind it
    (writes nothing)."""
    return Simulator(svc.model).judge(who.tenant, user, body.first, body.second)


@router.post("/users/{user}/synthetic-preferences", status_code=status.HTTP_201_CREATED,
             response_model=list[FeedbackIn])
def record_preferences(user: str, body: PreferencesRequest, svc: ServiceDep, who: CallerDep) -> list[FeedbackIn]:
    """Judge pairs of the user's text outputs and store the decided ones as pairwise feedback
    marked synthetic (what a DPO training reads); returns the rows written."""
    pairs = [tuple(pair) for pair in body.pairs] if body.pairs is not None else None
    rows = Simulator(svc.model).record_preferences(who.tenant, user, pairs)  # type: ignore[arg-type]
    svc.store.audit.record_audit(who.tenant, who.actor, "feedback.synthetic", user=user,
                                 detail={"rows": len(rows)})
    return rows
