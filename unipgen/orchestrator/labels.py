"""Labels and ratings: a text request whose answer is one of a set is scored, not sampled.

`options.labels` (CLI ``--label``, repeated) or `options.scale` (``--scale 1 5``) makes a text
request a classification or a rating. When the generation is prepared, `plan` reads the user's
answers to such questions from memory (`core.label_history`) and plans the scoring
(`core.label_plan`): the question's prompt (the instruction, the allowed answers, and the user's
nearest answered items as examples) and one prompt per recent answered item, to fit how much this
user's answer follows their own habit, their nearest items or the model (leave-one-out). They go
to the backend in one call, as best-of-N candidates do; the text backend ranks the allowed
answers of each by likelihood (`modalities.text_scoring`), through the user's text LoRA when
they have one. `select`, when the outputs become artifacts, mixes the sources and keeps one
output: the answer, with ``meta["label"]`` saying how it was chosen and how much of it came
from each source. The answer's lineage names every memory item the history was read from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from unipgen.core import label_history, label_plan
from unipgen.core.context import SNAPSHOT_SPACES
from unipgen.core.label_plan import Question
from unipgen.core.usermodel import UserModel
from unipgen.errors import InvalidInputError
from unipgen.schema.generation import GeneratedOutput, GenerationRequest


@dataclass(frozen=True)
class Scoring:
    """A scored request's backend requests (the question's first), its plan, and the lineage it adds."""

    requests: list[GenerationRequest]
    plan: label_plan.Plan
    sources: list[tuple[str, str]]
    history: int  # answered items in the user's memory


def plan(model: UserModel, request: GenerationRequest, settings: label_plan.Settings | None = None) -> Scoring:
    """The scoring of a labels / scale request (see the module docstring)."""
    context, options = request.context, request.options
    if context.modality != "text":
        raise InvalidInputError(f"labels and scale apply to text requests, not {context.modality!r}")
    answers, ordinal = options.answers(), options.scale is not None
    snapshot = model.store.reads.user_snapshot(context.tenant, context.user, SNAPSHOT_SPACES)
    found = label_history.history(snapshot, answers, options.scale)
    chosen = settings or label_plan.Settings(answer_name="rating" if ordinal else "label", item_name="item")
    if not found.items:
        chosen = label_plan.Settings(mode="model", examples_k=0, config=chosen.config)
    vector = model.encoders.text.encode([context.instruction])[0] if found.items else None
    question = Question(context.instruction, label_plan.instruction_prompt(context.instruction, answers, ordinal),
                        vector)
    template = label_plan.question_template(answers, ordinal)
    scoring = label_plan.plan(found.items, question, answers, ordinal, lambda text: template.replace("{text}", text),
                              chosen)
    reason = (f"answers scored: {len(answers)} allowed, ranked by the model"
              + (f" mixed with the user's {len(found.items)} earlier answers" if found.items else ""))
    method = request.plan.method if request.plan.method == "lora" else (
        "rag_prompt" if scoring.examples else "prompt_only")
    plans = [request.plan.model_copy(update={"prompt": prompt, "method": method, "evidence": scoring.examples,
                                             "reasons": [*request.plan.reasons, reason]})
             for prompt in scoring.prompts]
    requests = [request.model_copy(update={"plan": p}) for p in plans]
    sources = [(kind, key) for kind, key in (s.split(":", 1) for s in found.sources)]
    return Scoring(requests=requests or [request], plan=scoring, sources=sources, history=len(found.items))


def select(scoring: Scoring, produced: Sequence[Sequence[GeneratedOutput]]) -> list[GeneratedOutput]:
    """The one output to store: the answer the mix chooses, its meta saying how."""
    if len(produced) != len(scoring.requests):
        raise ValueError(f"{len(scoring.requests)} scored requests but outputs of {len(produced)}")
    logprobs = [outputs[0].meta["answer_logprobs"] for outputs in produced][: len(scoring.plan.prompts)]
    decision = label_plan.finish(scoring.plan, logprobs)
    answers = scoring.plan.answers
    first = produced[0][0]
    label = decision.meta(answers) | {"mode": scoring.plan.settings.mode, "history": scoring.history,
                                      "examples": scoring.plan.examples, "neighbours": scoring.plan.neighbours,
                                      "scored_prompts": len(scoring.plan.prompts)}
    meta = {**first.meta, "label": label}
    return [GeneratedOutput(data=answers[decision.answer].encode("utf-8"), media_type=first.media_type, meta=meta)]


__all__ = ["Scoring", "plan", "select"]
