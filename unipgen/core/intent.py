"""What a text request asks for: something new to try (retrieve-or-generate), or the user's own past.

A request that asks for a recommendation ("recommend a movie for my Friday night", "what should
I watch next?") needs items the user has NOT seen; one about their past ("which movies did I
rate highest?") needs their history. The rule is lexical and explicit, so a plan can say why it
chose: a recommendation verb or phrase, unless the request is about what the user already did.
"""

from __future__ import annotations

import re

_ASKS = re.compile(
    r"\b(recommend\w*|suggest\w*|what should i (watch|read|listen to|play|buy|try|see)|"
    r"(something|anything|what) (new|else) (to|i could|i might)|might (like|enjoy)|would i (like|enjoy)|"
    r"(watch|read|listen to|play|buy|try) next|ideas? for)\b",
    re.IGNORECASE)
_PAST = re.compile(
    r"\b(did i|have i|i('ve| have) (watched|seen|rated|read|liked|bought)|my (ratings?|history|favou?rites?)|"
    r"i (watched|rated|liked|read|bought|saw)|last time)\b",
    re.IGNORECASE)


def asks_for_recommendation(instruction: str) -> bool:
    """Whether a text request asks for items to try, rather than about the user's past."""
    return bool(_ASKS.search(instruction)) and not _PAST.search(instruction)


__all__ = ["asks_for_recommendation"]
