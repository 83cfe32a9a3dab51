"""The wire contract: every request, response and SSE event shape, declared once."""

from __future__ import annotations

from proxy.inputs import CreateRequest, parse_create, parse_json_object


def decode_create(body: bytes) -> CreateRequest:
    """Decode and validate a `POST /v1/model/response` body (raises the 400/422 ProxyErrors)."""
    return parse_create(parse_json_object(body))
