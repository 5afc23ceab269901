"""Prompt composition per modality within a token budget.

Text prompts carry the profile and retrieved evidence (RAG) before the instruction; image,
video, music (audio) and 3D prompts fold preference keywords after the instruction, the negative
preferences into a negative prompt; a speech prompt is the text to read, unchanged. Pieces are
added in order of importance until the budget is spent, so the instruction itself is never cut.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from unipgen.schema.context import Evidence, Keyword, Modality, Recommendation

#: Default budgets. Image/video/3D/audio prompts go through CLIP or T5-like encoders whose
#: window is 77 tokens for CLIP; text prompts leave room for the answer in a small LM's context.
#: Speech is read as written: its budget only bounds what is counted.
TOKEN_BUDGETS: dict[str, int] = {"text": 512, "image": 70, "video": 70, "audio": 120, "speech": 1000, "3d": 70}

_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """Words and punctuation marks: within about 20% of BPE token counts for English prose."""
    return len(_TOKEN.findall(text))


@dataclass
class Composed:
    prompt: str
    negative_prompt: str = ""
    used_tokens: int = 0
    evidence_keys: list[str] = field(default_factory=list)
    recommended_keys: list[str] = field(default_factory=list)


def compose(
    modality: Modality,
    instruction: str,
    *,
    profile: dict[str, Any],
    evidence: Sequence[Evidence] = (),
    keywords: Sequence[Keyword] = (),
    negative_keywords: Sequence[Keyword] = (),
    subject_phrase: str | None = None,
    budget: int | None = None,
    use_evidence: bool = True,
    recommended: Sequence[Recommendation] = (),
) -> Composed:
    """The prompt for one request; `subject_phrase` replaces the subject's mention (e.g. "sks dog");
    `recommended`: unseen items to suggest (text requests asking for a recommendation)."""
    budget = budget or TOKEN_BUDGETS[modality]
    if modality == "text":
        return _text_prompt(instruction, profile, evidence if use_evidence else (), budget, recommended)
    if modality == "speech":  # the words to say: nothing may be added to them
        return Composed(instruction, used_tokens=count_tokens(instruction))
    return _keyword_prompt(instruction, keywords, negative_keywords, subject_phrase, budget)


def _text_prompt(instruction: str, profile: dict[str, Any], evidence: Sequence[Evidence], budget: int,
                 recommended: Sequence[Recommendation] = ()) -> Composed:
    used = count_tokens(instruction)
    parts: list[str] = []
    facts = "; ".join(f"{k}: {v}" for k, v in profile.items())
    if facts and used + count_tokens(facts) + 4 <= budget:
        parts.append(f"About the user: {facts}.")
        used += count_tokens(parts[-1])
    # recommendations before the evidence: what the answer should name
    suggested_keys, used = _add_section(parts, "Suggest from these, which the user has not tried yet:",
                                        [(item.item, _suggestion(item)) for item in recommended], used, budget)
    keys, used = _add_section(parts, "Things this user wrote or liked:",
                              [(item.key, f"- {item.text}") for item in evidence], used, budget)
    parts.append(instruction)
    return Composed("\n\n".join(parts), used_tokens=used, evidence_keys=keys, recommended_keys=suggested_keys)


def _suggestion(item: Recommendation) -> str:
    """A recommended item's prompt line, with the two events that weigh most for it."""
    because = "; ".join(r.text for r in item.reasons[:2])
    return f"- {item.text}" + (f" (because they liked {because})" if because else "")


def _add_section(parts: list[str], title: str, lines: Sequence[tuple[str, str]], used: int,
                 budget: int) -> tuple[list[str], int]:
    """Append `title` and the (key, line) lines that fit in the budget, in order; returns the
    keys of the lines added and the tokens used."""
    kept, keys = [], []
    for key, line in lines:
        if used + count_tokens(line) > budget:
            break
        kept.append(line)
        keys.append(key)
        used += count_tokens(line)
    if kept:
        parts.append(title + "\n" + "\n".join(kept))
    return keys, used


def _keyword_prompt(
    instruction: str, keywords: Sequence[Keyword], negative: Sequence[Keyword], subject_phrase: str | None,
    budget: int,
) -> Composed:
    prompt = instruction.strip().rstrip(".")
    if subject_phrase:
        prompt = f"{prompt}, {subject_phrase}" if subject_phrase not in prompt else prompt
    used = count_tokens(prompt)
    for word in _unique(k.text for k in keywords):
        if word.lower() in prompt.lower() or used + count_tokens(word) + 1 > budget:
            continue
        prompt = f"{prompt}, {word}"
        used += count_tokens(word) + 1
    negative_prompt = ", ".join(_unique(k.text for k in negative))
    return Composed(prompt, negative_prompt, used)


def _unique(words: Sequence[str] | Any) -> list[str]:
    return list(dict.fromkeys(w.strip() for w in words if w.strip()))
