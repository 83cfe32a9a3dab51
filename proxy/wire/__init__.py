"""The wire contract: every request, response body and SSE event shape, declared once.

- `requests`: the bodies and query strings clients send (pydantic models: they validate).
- `bodies`: the JSON bodies the proxy answers with (TypedDicts: built as plain dicts,
  checked by mypy, encoded without a model in between).
- `events`: the SSE events of a streaming response (TypedDicts, for the same reason: they
  are on the per-token path).
- `decode`: bytes and query strings into request models, or the 400/422 envelope.

`proxy/openapi.py` generates the OpenAPI document from these declarations and from the
operations declared beside the handlers; nothing about a shape is written twice.
"""
