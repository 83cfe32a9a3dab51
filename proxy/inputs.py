"""Request parsing and validation: JSON bodies and query strings into checked values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import QueryParams

from proxy.errors import InvalidRequest, ValidationError

OUTPUT_MODE_NAMES = ("text", "plain", "structured", "blocks")
ROLES = ("user", "assistant", "system")


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRequest("The request body is nested too deeply.") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    # JSON may escape lone surrogates (\ud800) that no UTF-8 store or response can hold.
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise InvalidRequest("The request body contains an unpaired surrogate escape (\\ud800-\\udfff).") from exc
    return data


class _Checker:
    """Collects every field error of one body, then raises one 422 listing them all."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.errors: list[dict[str, str]] = []

    def fail(self, name: str, message: str) -> None:
        self.errors.append({"field": name, "message": message})

    def get(self, *names: str) -> tuple[str, Any]:
        for name in names:
            if name in self.data and self.data[name] is not None:
                return name, self.data[name]
        return names[0], None

    def string(self, *names: str, max_len: int = 1_000_000) -> str | None:
        name, value = self.get(*names)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(name, "must be a string")
            return None
        if len(value) > max_len:
            self.fail(name, f"must be at most {max_len} characters")
            return None
        return value

    def boolean(self, *names: str) -> bool | None:
        name, value = self.get(*names)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(name, "must be a boolean")
            return None
        return value

    def number(self, *names: str, low: float, high: float) -> float | None:
        name, value = self.get(*names)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.fail(name, f"must be a number between {low:g} and {high:g}")
            return None
        return float(value)

    def integer(self, *names: str, low: int, high: int) -> int | None:
        name, value = self.get(*names)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(name, f"must be an integer between {low} and {high}")
            return None
        return value

    def obj(self, *names: str) -> dict[str, Any] | None:
        name, value = self.get(*names)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(name, "must be an object")
            return None
        return value

    def done(self) -> None:
        if self.errors:
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in self.errors)
            raise ValidationError(f"Invalid request: {summary}", {"errors": self.errors})


def _content_text(item: dict[str, Any], where: str, check: _Checker) -> str | None:
    content = item.get("content")
    if content is None and isinstance(item.get("texts"), list):
        content = [{"type": "text", "text": t.get("text")} if isinstance(t, dict) else t for t in item["texts"]]
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, block in enumerate(content):
            if isinstance(block, str):
                texts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                texts.append(block["text"])
            elif isinstance(block, dict) and block.get("type") not in (None, "text", "input_text"):
                continue  # images, files: not supported by the proxy; ignored rather than rejected
            else:
                check.fail(f"{where}.content[{j}]", "must be a string or a {type: 'text', text} block")
                return None
        return "\n".join(texts)
    check.fail(f"{where}.content", "must be a string or a list of text blocks")
    return None


@dataclass
class CreateRequest:
    inputs: list[tuple[str, str]]
    thread_id: str | None = None
    model: str | None = None
    stream: bool = False
    instructions: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    output_mode: str = "text"
    organization_id: str | None = None
    assistant_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    store: bool = True


def parse_create(data: dict[str, Any]) -> CreateRequest:
    check = _Checker(data)
    inputs: list[tuple[str, str]] = []
    raw = data.get("inputs")
    if raw is None:
        check.fail("inputs", "is required")
    elif not isinstance(raw, list) or not raw:
        check.fail("inputs", "must be a non-empty list of {role, content} messages")
    else:
        for i, item in enumerate(raw):
            where = f"inputs[{i}]"
            if not isinstance(item, dict):
                check.fail(where, "must be an object with role and content")
                continue
            role = item.get("role", "user")
            if role not in ROLES:
                check.fail(f"{where}.role", f"must be one of {', '.join(ROLES)}")
                continue
            text = _content_text(item, where, check)
            if text is not None:
                inputs.append((role, text))
        if not check.errors and not any(role == "user" for role, _ in inputs):
            check.fail("inputs", "must contain at least one user message (the last one is the query)")
    req = CreateRequest(inputs=inputs)
    req.thread_id = check.string("thread_id", "threadId", max_len=200)
    req.model = check.string("model", max_len=500)
    req.stream = bool(check.boolean("stream"))
    req.instructions = check.string("instructions")
    req.temperature = check.number("temperature", low=0, high=2)
    req.top_p = check.number("top_p", "topP", low=0, high=1)
    req.max_tokens = check.integer("max_output_synapses", "maxTokens", "max_tokens", low=1, high=1_000_000)
    mode = check.string("output_mode", "outputMode") or "text"
    if mode not in OUTPUT_MODE_NAMES:
        check.fail("output_mode", f"must be one of {', '.join(OUTPUT_MODE_NAMES)}")
    req.output_mode = mode
    req.organization_id = check.string("organization_id", "organizationId", max_len=200)
    req.assistant_id = check.string("assistant_id", "assistantId", max_len=200)
    req.metadata = check.obj("metadata") or {}
    store = check.boolean("store")
    req.store = store is not False
    check.done()
    return req


def parse_thread_fields(data: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    check = _Checker(data)
    fields: dict[str, Any] = {}
    for name in ("title", "assistant_id"):
        if name in data:
            fields[name] = check.string(name, max_len=1000)
    if "metadata" in data:
        fields["metadata"] = check.obj("metadata") or {}
    if "visible_in_ui" in data:
        value = check.boolean("visible_in_ui")
        fields["visible_in_ui"] = True if value is None else value
    if creating:
        fields["organization_id"] = check.string("organization_id", "organizationId", max_len=200)
    check.done()
    return fields


def parse_message_update(data: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    check = _Checker(data)
    content = check.string("content")
    metadata = check.obj("metadata")
    check.done()
    return content, metadata


@dataclass
class PageParams:
    limit: int
    order: str
    after: str | None
    before: str | None


def parse_page(query: QueryParams, default_order: str, max_limit: int = 100) -> PageParams:
    errors = []
    raw_limit = query.get("limit") or "20"
    try:
        limit = int(raw_limit)
        if not 1 <= limit <= max_limit:
            raise ValueError
    except ValueError:
        errors.append({"field": "limit", "message": f"must be an integer between 1 and {max_limit}"})
        limit = 20
    order = query.get("order") or default_order
    if order not in ("asc", "desc"):
        errors.append({"field": "order", "message": "must be asc or desc"})
    if errors:
        raise ValidationError("Invalid query parameters", {"errors": errors})
    return PageParams(limit, order, query.get("after") or None, query.get("before") or None)


def parse_bool_param(query: QueryParams, name: str) -> bool | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValidationError(
        f"Invalid query parameter {name}", {"errors": [{"field": name, "message": "must be true or false"}]}
    )
