"""Preference optimization end to end: feedback on real outputs → DPO adapter → held-out effect.

`unipgen bench preference --json`. A simulated user who prefers concise answers judges pairs
of outputs of the offline profile's real LM (SmolLM2-135M-Instruct, packaged GGUF): for each
training instruction the platform generates two answers, the shorter one is recorded as chosen
(`add_feedback`, pairwise), and `train(..., "dpo")` fits the user's adapter. On held-out
instructions the same judge then compares the adapted user's answer with a non-adapted user's
answer to the same prompt and seed:

- `dpo_win_rate`: share of held-out instructions where the adapted answer is preferred
  (shorter; a tie counts half). 0.5 = no effect.
- `words_base` / `words_dpo`: mean answer length in words without / with the adapter.
- `dpo_margin_before` / `dpo_margin_after`: mean log π(chosen) − log π(rejected) of the
  training pairs under the base model and under the adapter.
- `dpo_step_s`: seconds per DPO step (batch of 4 pairs, chosen + rejected in one forward).

`--quick` runs the same path on the tiny random LM with fewer instructions (a smoke run; its
figures mean nothing).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from unipgen.tiny import score_kind

TRAIN = [
    "Suggest a film for a rainy evening.", "What should I cook for dinner tonight?", "Recommend a book for a holiday.",
    "How can I relax after work?", "Describe a good weekend trip.", "What is a nice gift for a friend?",
    "Suggest a song for a road trip.", "How do I start running?", "What should I do on a sunny Sunday?",
    "Recommend a board game for four players.", "How can I sleep better?", "Suggest a hobby to learn this winter.",
]
HELD_OUT = [
    "Suggest a documentary to watch.", "What is a good breakfast before work?", "Recommend a podcast for a commute.",
    "How can I keep my plants alive?", "Describe a perfect picnic.", "Suggest a museum to visit in a new city.",
    "What is a good way to learn a language?", "Recommend a dessert for a birthday.", "How do I plan a quiet day off?",
    "Suggest a card game for two.", "What should I pack for a beach day?", "How can I make my mornings calmer?",
]


def run(quick: bool = False, steps: int | None = None) -> dict[str, Any]:
    """All figures; `quick` uses the tiny random LM and fewer instructions."""
    import torch

    from unipgen.core.usermodel import UserModel
    from unipgen.eval.environment import machine
    from unipgen.memory import MemoryStore
    from unipgen.orchestrator import InlineGenerator
    from unipgen.orchestrator.training import train
    from unipgen.schema.generation import GenerationOptions
    from unipgen.schema.profiles import load_profile
    from unipgen.settings import Settings

    torch.set_num_threads(1)
    profile = load_profile("tiny" if quick else "offline")
    train_set, held_out = (TRAIN[:3], HELD_OUT[:2]) if quick else (TRAIN, HELD_OUT)
    max_new_tokens = 16 if quick else 48
    results: dict[str, Any] = {"machine": machine("torch", "transformers", "peft"), "quick": quick, "model": profile.backends["text"].ref, "max_new_tokens": max_new_tokens}
    with tempfile.TemporaryDirectory() as tmp, MemoryStore.open(Settings(home=Path(tmp) / "home")) as store:
        store.users.create_tenant("t")
        store.users.create_users("t", ["ann", "base"])
        model = UserModel(store, profile, cache_dir=Path(tmp) / "cache")
        generator = InlineGenerator(model)
        started = time.perf_counter()
        judged = _collect_feedback(store, generator, train_set, GenerationOptions(num_outputs=2, max_new_tokens=max_new_tokens))
        results["feedback_generation_s"] = round(time.perf_counter() - started, 1)
        print(f"  {judged} pairs judged from {len(train_set)} instructions", file=sys.stderr, flush=True)
        started = time.perf_counter()
        trained = train(model, "t", "ann", "dpo", steps=steps or (4 if quick else 24))
        elapsed = time.perf_counter() - started
        meta = next(a.meta for a in store.artifacts.artifacts("t", "ann", kind="adapter") if a.key == trained.key) or {}
        results |= {"pairs": judged, "dpo_steps": len(trained.losses), "dpo_train_s": round(elapsed, 1),
                    "dpo_step_s": round(elapsed / len(trained.losses), 2), "dpo_loss_first": trained.losses[0],
                    "dpo_loss_last": trained.losses[-1], "dpo_margin_before": meta.get("margin_before"),
                    "dpo_margin_after": meta.get("margin_after"), "dpo_accuracy_after": meta.get("accuracy_after")}
        results |= _held_out(generator, held_out, GenerationOptions(seed=11, max_new_tokens=max_new_tokens))
        results["score_kind"] = score_kind(generator.backend("text"))  # the tiny LM's: a mechanical check
    return results


def _words(text: str) -> int:
    return len(text.split())


def _collect_feedback(store: Any, generator: Any, instructions: list[str], options: Any) -> int:
    """Two answers per instruction; the simulated user chooses the shorter (ties are skipped)."""
    judged = 0
    for instruction in instructions:
        first, second = generator.generate("t", "ann", "text", instruction, options)
        texts = [store.artifacts.artifact_blob("t", a.key)[0].decode() for a in (first, second)]
        if _words(texts[0]) == _words(texts[1]):
            continue
        chosen, rejected = (first, second) if _words(texts[0]) < _words(texts[1]) else (second, first)
        store.events.add_feedback("t", [{"user": "ann", "type": "pairwise", "output": chosen.key, "rejected": rejected.key}])
        judged += 1
    return judged


def _held_out(generator: Any, instructions: list[str], options: Any) -> dict[str, Any]:
    """The adapted user vs a user without adapter, same prompt and seed, judged by length."""
    store = generator.model.store
    wins, base_words, dpo_words = 0.0, [], []
    for instruction in instructions:
        [adapted] = generator.generate("t", "ann", "text", instruction, options)
        [plain] = generator.generate("t", "base", "text", instruction, options)
        assert adapted.plan.method == "lora" and adapted.plan.prompt == plain.plan.prompt  # only the adapter differs
        ours, theirs = (_words(store.artifacts.artifact_blob("t", a.key)[0].decode()) for a in (adapted, plain))
        wins += 1.0 if ours < theirs else 0.5 if ours == theirs else 0.0
        base_words.append(theirs)
        dpo_words.append(ours)
    return {"held_out": len(instructions), "dpo_win_rate": round(wins / len(instructions), 3),
            "words_base": round(sum(base_words) / len(base_words), 1),
            "words_dpo": round(sum(dpo_words) / len(dpo_words), 1)}
