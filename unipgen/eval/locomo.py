"""Evidence recall on LoCoMo (`unipgen eval locomo`): does retrieval over a conversation's turns
find the turns that hold each question's answer?

For every conversation of a LoCoMo-layout file (default: the development half in
../shared/data/locomo-dev) the turns are indexed once (`ConversationIndex`: one MiniLM pass, three
bm25s indexes), then every question of categories 1-4 with evidence is asked three ways in the
same run: through the product (each conversation stored as a user's messages with
`UserModel.add_messages` in a fresh SQLite store, each question a text context's evidence, k
turns), the project's session-aware retrieval called directly, plain BM25 over the same turn
texts (`unipgen.core.retrieval.bm25_ranks`) and plain dense search with the same vectors. Recall@k of a
question is the share of its evidence turns among the k turns returned; the figures are means per
LoCoMo category and over all four. Timings: index build per conversation (embedding included),
per-question latency of the project's retrieval (the question's embedding included), and through
the product: ingest per conversation (embedding and storing) and a context's build time.
Category 5 (adversarial: no answer in the conversation) is not scored.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from unipgen.core.conversation import ConversationIndex, FusionWeights, TextEncoder, turn_document
from unipgen.core.retrieval import bm25_ranks
from unipgen.errors import InvalidInputError
from unipgen.eval.environment import machine, shared_data_dir, shown_data_path
from unipgen.eval.locomo_answers import answer_all, f1_table
from unipgen.memory.locomo import CATEGORIES, Conversation, Question, as_messages, load_locomo
from unipgen.tiny import MEASURE, MECHANICAL, ScoreKind, score_kind

METHODS = ("product", "session-aware", "bm25", "dense")
#: The tenant the product path stores conversations in.
TENANT = "locomo"
SCORED_CATEGORIES = (1, 2, 3, 4)
KS = (5, 10)
#: Quick runs: the first conversation and its first questions (a harness check, not the figures).
QUICK = {"conversations": 1, "questions": 40}
#: The issue's targets (docs/benchmarks.md): recall@10 over categories 1-4, build and query time.
TARGETS = {"recall_at_10": 0.80, "ingest_s": 5.0, "context_ms_p99": 100.0}


def run_locomo(data: Path | str | None = None, *, out: Path | str | None = None, quick: bool = False,
               conversations: int | None = None, questions: int | None = None,
               encoder: TextEncoder | None = None, weights: FusionWeights | None = None,
               answers: int = 0, profile: str = "offline",
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Recall@5/@10 of the retrievals on `data` (a LoCoMo JSON file); with `out`, writes
    `locomo.json`, `.md` and `.html` there. `conversations` / `questions` keep the first ones
    (per conversation); `quick` is 1 conversation, 40 questions. `answers`: how many questions
    of each conversation `profile`'s text model answers through the product, scored with
    LoCoMo's token F1 (`unipgen.eval.locomo_answers`)."""
    started = time.perf_counter()
    say = log or (lambda _line: None)
    path = Path(data) if data is not None else shared_data_dir() / "locomo-dev" / "locomo-dev.json"
    conversations = conversations if conversations is not None else QUICK["conversations"] if quick else None
    questions = questions if questions is not None else QUICK["questions"] if quick else None
    samples = load_locomo(path)[:conversations]
    encoder = encoder or _default_encoder()
    encoder.encode(["warm-up"])  # loads the model now, not inside the first conversation's timing
    per_conversation, recalls, query_ms, context_ms, answered = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="unipgen-locomo-") as home, \
            ProductPath(Path(home), encoder, weights, profile if answers else "tiny") as product:
        for conversation in samples:
            asked = scored_questions(conversation)[:questions]
            figures, rows, latencies = evaluate_conversation(conversation, asked, encoder, weights, product)
            say(f"{conversation.sample_id}: {figures['turns']} turns indexed in {figures['index_s']} s, "
                f"stored in {figures['ingest_s']} s, {len(asked)} questions")
            per_conversation.append(figures)
            recalls += rows
            query_ms += latencies
            context_ms += product.context_ms[-len(asked):] if asked else []
            if answers:
                answered += product.answer(conversation.sample_id, asked[:answers])
                say(f"{conversation.sample_id}: {min(answers, len(asked))} questions answered")
    if not recalls:
        raise InvalidInputError(f"{path}: no question of categories 1-4 with evidence to score")
    result = {"benchmark": "locomo",
              "settings": {"data": shown_data_path(path), "quick": quick, "conversations": conversations,
                           "questions": questions, "weights": asdict(weights or FusionWeights())},
              "questions": len(recalls), "recall": recall_table(recalls),
              "timing": timing(per_conversation, query_ms, context_ms), "conversations": per_conversation,
              "answers": {"profile": profile, "questions": len(answered), "score_kind": product.answer_kind,
                          "f1": f1_table(answered, SCORED_CATEGORIES), "examples": answered[:10]} if answers else None,
              "targets": TARGETS, "machine": machine("numpy", "torch", "bm25s"),
              "seconds": round(time.perf_counter() - started, 2)}
    if out is not None:
        result["report"] = write_locomo_report(Path(out), result)
    return result


def _default_encoder() -> TextEncoder:
    from unipgen.core.encoders.text import SentenceTransformerEncoder

    return SentenceTransformerEncoder()


def scored_questions(conversation: Conversation) -> list[Question]:
    """The questions recall is measured on: categories 1-4, with at least one evidence turn."""
    return [q for q in conversation.questions if q.category in SCORED_CATEGORIES and q.evidence]


def evaluate_conversation(conversation: Conversation, questions: Sequence[Question], encoder: TextEncoder,
                          weights: FusionWeights | None = None, product: ProductPath | None = None,
                          ) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[float, float]]]:
    """Index one conversation, rank its turns for each question the four ways (three without
    `product`); the conversation's figures, one recall row per question, and the project's
    per-question (wall, CPU) milliseconds of the direct call."""
    begun, begun_cpu = time.perf_counter(), time.process_time()
    index = ConversationIndex(conversation.turns, encoder, weights)
    index_s, index_cpu_s = time.perf_counter() - begun, time.process_time() - begun_cpu
    ingest_s, ingest_cpu_s = product.ingest(conversation) if product is not None else (None, None)
    keys = [turn.key for turn in conversation.turns]
    documents = [turn_document(turn) for turn in conversation.turns]
    methods = METHODS if product is not None else METHODS[1:]
    rows, latencies = [], []
    for question in questions:
        begun, begun_cpu = time.perf_counter(), time.process_time()
        vectors = index.query_vectors(question.question)
        ours = [hit.key for hit in index.search(question.question, max(KS), vectors)]
        latencies.append(((time.perf_counter() - begun) * 1000, (time.process_time() - begun_cpu) * 1000))
        rankings = {"session-aware": ours, "bm25": plain_bm25(question.question, documents, keys),
                    "dense": plain_dense(vectors[0], index.vectors, keys)}
        if product is not None:
            rankings["product"] = product.ask(conversation.sample_id, question.question)
        rows.append({"category": question.category,
                     **{f"{m}@{k}": recall_at(rankings[m], question.evidence, k) for m in methods for k in KS}})
    figures = {"sample_id": conversation.sample_id, "turns": len(keys), "sessions": len(conversation.sessions),
               "questions": len(questions), "index_s": round(index_s, 3), "index_cpu_s": round(index_cpu_s, 3),
               "ingest_s": ingest_s, "ingest_cpu_s": ingest_cpu_s,
               "recall_at_10": {m: _mean([r[f"{m}@10"] for r in rows]) for m in methods}}
    return figures, rows, latencies


class ProductPath:
    """The product's own path: conversations stored as users' messages (`UserModel.add_messages`,
    a fresh SQLite store under `home`) and questions answered by a text context's evidence
    (`UserModel.context`, for generation, `evidence_k` = 10): what `unipgen chat` and a text
    generation read. Uses the harness's `encoder` as the profile's text encoder."""

    def __init__(self, home: Path, encoder: TextEncoder, weights: FusionWeights | None = None,
                 profile: str = "tiny") -> None:
        from unipgen.core.context import ContextConfig
        from unipgen.core.usermodel import UserModel
        from unipgen.memory import MemoryStore
        from unipgen.settings import Settings

        self.store = MemoryStore.open(Settings(home=home))
        self.store.users.create_tenant(TENANT)
        self.answer_kind: ScoreKind = MEASURE  # of the answers' F1, once a question is answered
        self.model = UserModel(self.store, profile, config=ContextConfig(evidence_k=max(KS), include_vectors=False),
                               cache_dir=home / "cache")
        self.model.encoders.use("text", encoder)
        if weights is not None:
            self.model.builder.conversations.weights = weights
        self.context_ms: list[float] = []

    def ingest(self, conversation: Conversation) -> tuple[float, float]:
        """Store the conversation as user `sample_id`'s messages: (wall s, CPU s)."""
        begun, begun_cpu = time.perf_counter(), time.process_time()
        self.store.users.create_user(TENANT, conversation.sample_id)
        self.model.add_messages(TENANT, conversation.sample_id, as_messages(conversation))
        return round(time.perf_counter() - begun, 3), round(time.process_time() - begun_cpu, 3)

    def ask(self, user: str, question: str) -> list[str]:
        """The keys of a text context's evidence for `question`, best first."""
        begun = time.perf_counter()
        context = self.model.context(TENANT, user, "text", question, for_generation=True)
        self.context_ms.append((time.perf_counter() - begun) * 1000)
        return [e.key for e in context.evidence]

    def answer(self, user: str, questions: Sequence[Question]) -> list[dict[str, Any]]:
        """`questions` answered by the profile's text model through the generation path, scored."""
        from unipgen.orchestrator import InlineGenerator

        generator = InlineGenerator(self.model)
        self.answer_kind = score_kind(generator.backend("text"))  # a random LM's F1 is a mechanical check
        return answer_all(generator, TENANT, user, questions)

    def __enter__(self) -> ProductPath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def plain_bm25(question: str, documents: list[str], keys: list[str]) -> list[str]:
    """Turn keys by the project's plain BM25 rank (turns sharing no term are left out)."""
    ranks = bm25_ranks(question, documents)
    return [keys[i] for i in sorted(ranks, key=ranks.__getitem__)][: max(KS)]


def plain_dense(vector: np.ndarray, vectors: np.ndarray, keys: list[str]) -> list[str]:
    """Turn keys by cosine with the question (normalised vectors), best first."""
    order = np.argsort(-(vectors @ vector), kind="stable")[: max(KS)]
    return [keys[int(i)] for i in order]


def recall_at(ranked: Sequence[str], evidence: Sequence[str], k: int) -> float:
    """Share of the evidence turns among the first k of `ranked`."""
    if not evidence:
        raise InvalidInputError("recall needs at least one evidence turn")
    top = set(ranked[:k])
    return sum(key in top for key in evidence) / len(evidence)


def recall_table(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """method → "@k" → category ("1".."4", "all") → mean recall (None where no question)."""
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for method in [m for m in METHODS if rows and f"{m}@{KS[0]}" in rows[0]]:
        table[method] = {}
        for k in KS:
            column = f"{method}@{k}"
            by_category: dict[str, float | None] = {
                str(c): _mean([r[column] for r in rows if r["category"] == c]) for c in SCORED_CATEGORIES}
            by_category["all"] = _mean([r[column] for r in rows])
            table[method][f"@{k}"] = by_category
    return table


def timing(conversations: Sequence[dict[str, Any]], query_ms: Sequence[tuple[float, float]],
           context_ms: Sequence[float] = ()) -> dict[str, float]:
    """Wall-clock seconds and milliseconds, and the process's CPU time beside them: on a shared
    machine wall time counts the waits for a core, CPU time of a one-thread run does not. The
    context's milliseconds are warm (the first question of a conversation builds its index)."""
    index_s = [c["index_s"] for c in conversations]
    cpu_s = [c["index_cpu_s"] for c in conversations]
    figures = {"index_s_mean": round(float(np.mean(index_s)), 3), "index_s_max": round(max(index_s), 3),
               "index_cpu_s_mean": round(float(np.mean(cpu_s)), 3), "index_cpu_s_max": round(max(cpu_s), 3),
               **{f"query{kind}_ms_p{p}": round(float(np.percentile([q[column] for q in query_ms], p)), 2)
                  for column, kind in ((0, ""), (1, "_cpu")) for p in (50, 99)}}
    ingest = [c["ingest_s"] for c in conversations if c.get("ingest_s") is not None]
    if ingest:
        figures |= {"ingest_s_mean": round(float(np.mean(ingest)), 3), "ingest_s_max": round(max(ingest), 3),
                    "ingest_cpu_s_max": round(max(c["ingest_cpu_s"] for c in conversations), 3)}
    warm = [ms for c, start in _starts(conversations) for ms in context_ms[start + 1: start + c["questions"]]]
    if warm:
        figures |= {f"context_ms_p{p}": round(float(np.percentile(warm, p)), 2) for p in (50, 99)}
    return figures


def _starts(conversations: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """Each conversation with the index of its first question in the run's list."""
    starts, at = [], 0
    for conversation in conversations:
        starts.append((conversation, at))
        at += conversation["questions"]
    return starts


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


# ---- the report --------------------------------------------------------------------------------

def write_locomo_report(out_dir: Path, result: dict[str, Any]) -> dict[str, str]:
    """`locomo.json`, `.md` and `.html`: a recall table per k, the timings and the machine."""
    from unipgen.eval.report import Heading, Paragraph, Table, write_report

    headers = ["retrieval", *(f"{c} {CATEGORIES[c]}" for c in SCORED_CATEGORIES), "all 1-4"]
    blocks: list[Any] = [Paragraph(
        f"{result['questions']} questions of categories 1-4 over {len(result['conversations'])} conversation(s) "
        f"of {result['settings']['data']}. Recall@k: share of a question's evidence turns among the k turns "
        "returned, averaged. All retrievals ran in the same process on the same turns and vectors; "
        "`product` is the session-aware retrieval as a stored user's text context reads it.")]
    for k in KS:
        rows = [[m, *(result["recall"][m][f"@{k}"][key] for key in (*map(str, SCORED_CATEGORIES), "all"))]
                for m in result["recall"]]
        blocks += [Heading(f"Evidence recall@{k}"), Table(headers, rows)]
    t = result["timing"]
    blocks += [Heading("Time"),
               Paragraph("Index build: one MiniLM pass over the turns and three BM25 indexes, per conversation; "
                         "query: the question's two vectors and the fused scores. CPU seconds are the process's "
                         "(with one thread: the wall time on an idle core)."),
               Table(["index build s (mean)", "index build s (max)", "index CPU s (mean)", "index CPU s (max)",
                      "query ms p50", "query ms p99", "query CPU ms p99"],
                     [[t["index_s_mean"], t["index_s_max"], t["index_cpu_s_mean"], t["index_cpu_s_max"],
                       t["query_ms_p50"], t["query_ms_p99"], t["query_cpu_ms_p99"]]], digits=2),
               Paragraph("Through the product: ingest stores a conversation as a user's messages (embedding "
                         "included); a context is `UserModel.context` for a text generation, warm (the "
                         "conversation's index built by its first question)."),
               Table(["ingest s (mean)", "ingest s (max)", "ingest CPU s (max)", "context ms p50", "context ms p99"],
                     [[t.get("ingest_s_mean"), t.get("ingest_s_max"), t.get("ingest_cpu_s_max"),
                       t.get("context_ms_p50"), t.get("context_ms_p99")]], digits=2),
               Heading("Machine"), Table(["key", "value"], [[k, v] for k, v in result["machine"].items()])]
    if result.get("answers"):
        answers = result["answers"]
        blocks[-2:-2] = [Heading("Answers (LoCoMo token F1)"), Paragraph(
            f"{answers['questions']} questions answered by the {answers['profile']!r} profile's text model through "
            "the generation path (the retrieved turns in its prompt); reported, no target."
            + (f" These F1 are a {MECHANICAL}: the text model has random weights." if
               answers.get("score_kind") == MECHANICAL else "")),
            Table(headers[1:], [[answers["f1"][key] for key in (*map(str, SCORED_CATEGORIES), "all")]])]
    return write_report(out_dir, "locomo", "LoCoMo evidence recall", blocks, result).as_dict()
