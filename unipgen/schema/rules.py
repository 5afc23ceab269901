"""The data rules every write obeys: what a public id may be, and that numbers are finite.

Defined once here and used by the pydantic models (`PublicId`, `FiniteFloat`), by the store's
write paths for library callers (`check_public_id`, `check_finite`, `check_json`), and by the
check that lists stored rows breaking them (`MemoryStore.check_data`, `unipgen check`).

A public id is a path segment of the HTTP API (``/v1/users/{user}/faces/{key}``): an id the store
holds must be addressable there, so every write refuses the ids no URL can carry back. A '/'
splits the segment (servers decode ``%2F`` before routing); '.' and '..' are removed by URL
normalisation; control characters and lone surrogates do not survive logs, headers and UTF-8;
leading or trailing whitespace is invisible and stripped by many tools. Everything else
(spaces inside, '%', '?', '#', unicode) is allowed: the SDK percent-encodes each segment.

A non-finite number (NaN, ±infinity) has no JSON form and poisons every vector computed from
it, so values, ratings and metadata refuse it everywhere, with one message.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, WithJsonSchema

from unipgen.errors import InvalidInputError

#: The longest public id (the database columns are VARCHAR(255)).
MAX_ID_LENGTH = 255

#: What the rule says, for the OpenAPI document and error messages.
ID_RULE = ("1 to 255 characters; no '/', no control characters, no leading or trailing whitespace, "
           "not '.' or '..'")

#: The message of every refused non-finite number.
NOT_FINITE = "must be a finite number (not NaN or infinity)"

#: The characters no id may hold: the slash, C0 and C1 control characters, DEL, lone surrogates.
FORBIDDEN_IN_ID = re.compile("[/\x00-\x1f\x7f-\x9f\ud800-\udfff]")

_Value = TypeVar("_Value")


def id_problem(value: Any) -> str | None:
    """Why `value` is not a valid public id, or None when it is."""
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if not value.strip():
        return "must not be blank"
    if len(value) > MAX_ID_LENGTH:
        return f"must be at most {MAX_ID_LENGTH} characters (it has {len(value)})"
    if value in (".", ".."):
        return "must not be '.' or '..'"
    if value != value.strip():
        return "must not start or end with whitespace"
    bad = FORBIDDEN_IN_ID.search(value)
    if bad is not None:
        return "must not contain '/'" if bad.group() == "/" else f"must not contain the control character {bad.group()!r}"
    return None


def check_public_id(value: Any, what: str) -> str:
    """`value` if it is a valid public id; else an `InvalidInputError` naming `what` and why."""
    checked: str = _as_invalid_input(_validate_id, value, f"{what} id {_shown(value)} ")
    return checked


_T = TypeVar("_T")


def _as_invalid_input(rule: Callable[[_T], _T], value: _T, prefix: str) -> _T:
    """`rule(value)` for library callers of the store: the pydantic rule's `ValueError` becomes an
    `InvalidInputError`, its message after `prefix` (so both forms say the same)."""
    try:
        return rule(value)
    except ValueError as exc:
        raise InvalidInputError(f"{prefix}{exc}") from None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _validate_id(value: str) -> str:
    problem = id_problem(value)
    if problem is not None:
        raise ValueError(f"is not a valid id: it {problem}")
    return value


#: A public id in a pydantic model (see `ID_RULE`).
PublicId = Annotated[str, AfterValidator(_validate_id), WithJsonSchema(
    {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "description": f"A public id: {ID_RULE}."})]


def check_finite(value: float, what: str = "value") -> float:
    """`value` if it is a finite number; else an `InvalidInputError`."""
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(f"{what} {NOT_FINITE}, not {value!r}")
    return value


def _validate_finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{NOT_FINITE}, not {value!r}")
    return value


#: A float field that refuses NaN and infinity with `NOT_FINITE`.
FiniteFloat = Annotated[float, AfterValidator(_validate_finite)]


def json_problem(value: Any) -> str | None:
    """Why `value` is not JSON that survives a round trip as UTF-8, or None when it is."""
    if _has_non_finite(value):
        return f"every number {NOT_FINITE}"
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode()
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        return f"must be JSON of valid Unicode text (no objects, no lone surrogates): {exc}"
    return None


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(v) for v in value)
    return False


def check_json(value: _Value) -> _Value:
    """`value` if it is JSON that survives a round trip as UTF-8: no NaN or infinity, no objects,
    no lone surrogates (JSON text may escape one, "\\ud800", that no UTF-8 response can carry
    back). A `ValueError`, for pydantic validators; `check_json_value` is the store's form."""
    problem = json_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def check_json_value(value: _Value, what: str) -> _Value:
    """`check_json` for library callers of the store: an `InvalidInputError` naming `what`."""
    return _as_invalid_input(check_json, value, f"{what}: ")


#: Free-form metadata of a pydantic model: JSON that survives a round trip (`check_json`), or None.
JsonMeta = Annotated[dict[str, Any] | None, AfterValidator(check_json)]


__all__ = [
    "FORBIDDEN_IN_ID",
    "ID_RULE",
    "MAX_ID_LENGTH",
    "NOT_FINITE",
    "FiniteFloat",
    "JsonMeta",
    "PublicId",
    "check_finite",
    "check_json",
    "check_json_value",
    "check_public_id",
    "id_problem",
    "json_problem",
]
