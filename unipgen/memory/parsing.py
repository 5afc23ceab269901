"""Validation of bulk input rows, with errors that name the first bad row."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from unipgen.errors import ConflictError, InvalidInputError


def parse_rows(rows: Iterable[Any], model: type[BaseModel], what: str) -> list[Any]:
    """Validate rows (dicts or `model` instances) in one pass; an error names the first bad row."""
    rows = list(rows)
    try:
        return _list_adapter(model).validate_python(rows)
    except ValidationError as exc:
        number = exc.errors()[0]["loc"][0]
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'][1:])) or 'value'}: {err['msg']}"
            for err in exc.errors() if err["loc"][0] == number
        )
        raise InvalidInputError(f"{what} #{number} is invalid: {problems}") from None


@functools.cache
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]  # a runtime type: mypy takes `model` for a variable


def refuse_duplicates(keys: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            raise ConflictError(f"duplicate {what} id {key!r} in the request")
        seen.add(key)
