"""Values generated from a JSON schema (structured output and tool arguments), with no model weights.

Generation is deterministic: strings come from the prompt's words, numbers from the numbers the
prompt mentions (in order), so `add two numbers 123 and 3210` yields `{"a": 123, "b": 3210}`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
MAX_DEPTH = 6


class SchemaError(ValueError):
    """A schema the simulator (like LM Studio's grammar compiler) cannot turn into a grammar."""


class Hints:
    """What the prompt offers to fill values with: its numbers and words, handed out in order."""

    def __init__(self, prompt: str) -> None:
        self._numbers: Iterator[str] = iter(_NUMBER.findall(prompt))
        words = _WORD.findall(prompt) or ["simulated"]
        self._words = words
        self._next_word = 0

    def number(self) -> float | None:
        text = next(self._numbers, None)
        return None if text is None else float(text)

    def word(self) -> str:
        word: str = self._words[self._next_word % len(self._words)]
        self._next_word += 1
        return word


def validate(schema: Any) -> None:
    """Raise SchemaError for what cannot be a JSON schema."""
    _walk(schema, schema, 0, None)


def generate(schema: Any, prompt: str = "") -> Any:
    """A value valid for `schema` (raises SchemaError for an invalid schema)."""
    return _walk(schema, schema, 0, Hints(prompt))


def _resolve(root: Any, ref: str) -> Any:
    if not ref.startswith("#"):
        raise SchemaError(f"unsupported $ref {ref!r} (only local references)")
    node = root
    for part in [p for p in ref[1:].split("/") if p]:
        if not isinstance(node, dict) or part not in node:
            raise SchemaError(f"unresolvable $ref {ref!r}")
        node = node[part]
    return node


def _walk(schema: Any, root: Any, depth: int, hints: Hints | None) -> Any:
    """Generate (or, with no hints, only check) a value for `schema`."""
    if schema is True or schema == {}:
        return hints.word() if hints else None
    if not isinstance(schema, dict):
        raise SchemaError(f"a schema must be an object, got {type(schema).__name__}")
    if depth > MAX_DEPTH * 4:
        raise SchemaError("schema nesting too deep (a $ref cycle?)")
    if "$ref" in schema:
        return _walk(_resolve(root, str(schema["$ref"])), root, depth + 1, hints)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        if not isinstance(schema["enum"], list) or not schema["enum"]:
            raise SchemaError("enum must be a non-empty array")
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = schema[key]
            if not isinstance(options, list) or not options:
                raise SchemaError(f"{key} must be a non-empty array")
            if hints is None:
                for option in options:
                    _walk(option, root, depth + 1, None)
                return None
            return _walk(options[0], root, depth + 1, hints)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        kind = kinds[0]
    if kind not in _TYPES:
        raise SchemaError(f"unknown type {kind!r}")
    if kind == "object":
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise SchemaError("properties must be an object")
        required = schema.get("required", list(properties))
        if not isinstance(required, list):
            raise SchemaError("required must be an array")
        # Fill every property (optional ones too, while shallow) so the value shows the whole shape.
        # `required` keeps a function's parameter order (properties may come sorted): fill in that order.
        ordered = [n for n in required if n in properties] + [n for n in properties if n not in required]
        names = [n for n in ordered if n in required or depth < MAX_DEPTH]
        values = {name: _walk(properties[name], root, depth + 1, hints) for name in names}
        return values if hints else None
    if kind == "array":
        items = schema.get("items", {})
        count = max(int(schema.get("minItems", 1)), 1) if depth < MAX_DEPTH else int(schema.get("minItems", 0))
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        return (
            [_walk(items, root, depth + 1, hints) for _ in range(count)]
            if hints
            else _walk(items, root, depth + 1, None)
        )
    if hints is None:
        return None
    if kind == "string":
        text = hints.word()
        if "maxLength" in schema:
            text = text[: int(schema["maxLength"])]
        return text.ljust(int(schema.get("minLength", 0)), "x")
    if kind in ("integer", "number"):
        value = hints.number()
        low = schema.get("minimum")
        high = schema.get("maximum")
        if value is None:
            value = float(low) if low is not None else 1.0
        if low is not None:
            value = max(value, float(low))
        if high is not None:
            value = min(value, float(high))
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    return None
