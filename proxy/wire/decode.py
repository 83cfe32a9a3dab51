"""Decoding: request bytes and query strings into request models, or the 400/422 error."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import pydantic
from pydantic import BaseModel

from proxy.errors import InvalidRequest, ValidationError
from proxy.wire.requests import CreateResponseRequest

M = TypeVar("M", bound=BaseModel)

# pydantic's own words for what the whole body got wrong (not one field): a 400, not a 422.
_NOT_AN_OBJECT = {"model_type", "model_attributes_type", "dict_type"}


def _field(loc: tuple[int | str, ...]) -> str:
    """('inputs', 0, 'role') → 'inputs[0].role': the name the client sent (camelCase if it did)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _errors(exc: pydantic.ValidationError) -> list[dict[str, str]]:
    seen: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        seen.setdefault(_field(error["loc"]), error["msg"])
    return [{"field": field, "message": message} for field, message in seen.items()]


def _invalid(exc: pydantic.ValidationError, what: str) -> Exception:
    first = exc.errors(include_url=False, include_input=False)[0]
    if first["type"] == "json_invalid":
        detail = first["msg"].removeprefix("Invalid JSON: ")
        if "recursion limit" in detail:
            return InvalidRequest("The request body is nested too deeply.")
        return InvalidRequest(f"The request body is not valid JSON: {detail}")
    if first["type"] in _NOT_AN_OBJECT and not first["loc"]:
        return InvalidRequest("The request body must be a JSON object.")
    errors = _errors(exc)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return ValidationError(f"Invalid {what}: {summary}", {"errors": errors})


def decode_body(model: type[M], body: bytes, *, empty_is_object: bool = False) -> M:
    """A JSON body into `model`; an empty body is `{}` where the endpoint allows one."""
    if not body.strip():
        if not empty_is_object:
            raise InvalidRequest("The request body must be a JSON object.")
        body = b"{}"
    try:
        return model.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise _invalid(exc, "request") from None


def decode_create(body: bytes) -> CreateResponseRequest:
    """Decode and validate a `POST /v1/model/response` body."""
    return decode_body(CreateResponseRequest, body)


def decode_query(model: type[M], query: Mapping[str, str]) -> M:
    """A query string into `model`; empty values count as absent."""
    try:
        return model.model_validate({k: v for k, v in query.items() if v != ""})
    except pydantic.ValidationError as exc:
        raise _invalid(exc, "query parameters") from None
