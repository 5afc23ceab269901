"""The OpenAPI document: every request body has an example, and each example is valid input."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("fastapi")

from unipgen.api.app import create_app  # noqa: E402
from unipgen.schema import api as schemas  # noqa: E402
from unipgen.schema.memory import EventIn  # noqa: E402


def test_every_json_body_has_a_valid_example() -> None:
    spec = create_app().openapi()
    bodies = {op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
              for path in spec["paths"].values() for op in path.values()
              if "application/json" in op.get("requestBody", {}).get("content", {})}
    models = {name: cls for name, cls in inspect.getmembers(schemas, inspect.isclass)} | {"EventIn": EventIn}
    assert len(bodies) >= 10
    for name in sorted(bodies):
        examples = spec["components"]["schemas"][name].get("examples")
        assert examples, f"{name} has no example in the OpenAPI document"
        for example in examples:
            models[name].model_validate(example)  # raises if the example is not valid input
