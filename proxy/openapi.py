"""The OpenAPI 3.1 document, generated from the wire shapes and the routes' operations.

Nothing here describes a shape by hand: request models, response and event TypedDicts come
from `proxy.wire`, operations from the routes (`proxy.routing.Operation`), error statuses and
codes from `proxy.errors`. `/openapi.json` serves it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from pydantic import AliasChoices, BaseModel, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from proxy.errors import error_classes
from proxy.routing import Endpoints, Operation, OperationRoute
from proxy.wire.bodies import OVERHEAD_HEADER, OVERHEAD_HEADER_DESCRIPTION, ErrorEnvelope
from proxy.wire.events import STREAM_DESCRIPTION, StreamEvent

JSON = dict[str, Any]
REF = "#/components/schemas/{model}"

INFO_DESCRIPTION = """\
The Aitronos "Freddy" responses/threads API, served on localhost and backed by LM Studio.

JSON everywhere, snake_case keys. Every response carries `X-Request-Id`; error bodies repeat it as
`trace_id`. A `Host` header naming anything but an IP address, `localhost` or a name in
`server.allowed_hosts` is a 421 (the DNS-rebinding guard). Every error has the `ErrorEnvelope`
body and the matching status: besides the
statuses listed per operation, a known path with a method it does not serve is a 405, and an
unknown path a 404. The API key may come in `X-API-Key`, `api-key`, or `Authorization: Bearer`.
Every thread belongs to the key that created it."""

TAGS = [
    {"name": "responses", "description": "Create, stream and cancel responses"},
    {"name": "threads", "description": "Threads (v5 SDK threads.*)"},
    {"name": "messages", "description": "A thread's messages (v5 SDK messages.*)"},
    {"name": "models", "description": "LM Studio models"},
    {"name": "usage", "description": "Token usage (proxy addition)"},
    {"name": "meta", "description": "Health, metrics, this document, the playground"},
]
HEADERS: JSON = {
    "X-Request-Id": {"description": "The request id (req_…), on every response", "schema": {"type": "string"}},
    OVERHEAD_HEADER: {"description": OVERHEAD_HEADER_DESCRIPTION, "schema": {"type": "string"}},
}
REQUEST_ID_HEADER: JSON = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}


class _NoTitles(GenerateJsonSchema):
    """pydantic's schemas without the `title` it derives from every name (noise in a document)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def generate(self, schema: Any, mode: Any = "validation") -> JSON:
        out = super().generate(schema, mode)
        out.pop("title", None)
        return out

    def get_title_from_name(self, name: str) -> str:
        return ""


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def _name(shape: Any) -> str:
    return getattr(shape, "__name__", str(shape))


def _add_aliases(model: type[BaseModel], schema: JSON) -> None:
    """Every spelling a model accepts is a documented property (pydantic lists only the first)."""
    for field in model.model_fields.values():
        choices = field.validation_alias
        if not isinstance(choices, AliasChoices):
            continue
        names = [str(c) for c in choices.choices]
        first = schema["properties"][names[0]]
        for alias in names[1:]:
            schema["properties"][alias] = {**first, "description": f"Alias of `{names[0]}` (the other SDK's spelling)"}


def _error_responses() -> JSON:
    by_status: dict[int, list[str]] = {}
    for cls in error_classes():
        by_status.setdefault(cls.status, []).append(f"{cls.code}: {cls.__doc__}")
    return {
        str(status): {
            "description": " ".join(lines),
            "headers": REQUEST_ID_HEADER,
            "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorEnvelope")}}},
        }
        for status, lines in sorted(by_status.items())
    }


def _parameters(path: str, query: type[BaseModel] | None) -> list[JSON]:
    params: list[JSON] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in (part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{"))
    ]
    if query is not None:
        schema = _strip_titles(query.model_json_schema(schema_generator=_NoTitles))
        for name, prop in schema["properties"].items():
            param: JSON = {"name": name, "in": "query", "required": False, "schema": prop}
            if "description" in prop:
                param["description"] = prop.pop("description")
            params.append(param)
    return params


def _operation(route: OperationRoute, refs: dict[str, JSON]) -> JSON:
    op = route.operation
    out: JSON = {"operationId": op.id, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    parameters = _parameters(route.path, op.query)
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[_name(op.body)]}},
        }
    headers = {**REQUEST_ID_HEADER, **{name: {"$ref": f"#/components/headers/{name}"} for name in op.headers}}
    ok: JSON = {"description": op.response_description, "headers": headers}
    if op.response is not None:
        ok["content"] = {op.media: {"schema": refs[_name(op.response)]}}
    elif op.status != 204:
        ok["content"] = {op.media: {"schema": {"type": "string"} if op.media != "application/json" else {}}}
    if op.stream_description:
        ok["content"]["text/event-stream"] = {"schema": {"type": "string", "description": op.stream_description}}
    statuses = {*op.errors, 421, 500} | (set() if op.public else {401})
    out["responses"] = {
        str(op.status): ok,
        **{str(s): {"$ref": f"#/components/responses/{s}"} for s in sorted(statuses)},
    }
    if op.public:
        out["security"] = []
    return out


def document(routes: Sequence[BaseRoute]) -> JSON:
    """The OpenAPI document of the operations among `routes` (the app's)."""
    operations = [r for r in routes if isinstance(r, OperationRoute)]
    shapes: dict[str, Any] = {"ErrorEnvelope": ErrorEnvelope, "StreamEvent": StreamEvent}
    for route in operations:
        for shape in (route.operation.body, route.operation.response):
            if shape is not None:
                shapes[_name(shape)] = shape
    inputs: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
        (name, "validation" if isinstance(s, type) and issubclass(s, BaseModel) else "serialization", TypeAdapter(s))
        for name, s in shapes.items()
    ]
    refs, defs = TypeAdapter.json_schemas(inputs, ref_template=REF, schema_generator=_NoTitles)
    schemas: JSON = _strip_titles(defs.get("$defs", {}))
    top = {key[0]: value for key, value in refs.items()}
    for name, shape in shapes.items():
        if isinstance(shape, type) and issubclass(shape, BaseModel):
            _add_aliases(shape, schemas[name])
    # StreamEvent is a union, not a class: its schema is inline; give it a name of its own.
    schemas["StreamEvent"] = {
        **_strip_titles(top["StreamEvent"]),
        "description": "One SSE `data:` frame of a streaming response (the final `[DONE]` frame is not JSON).",
    }
    named = {name: {"$ref": REF.format(model=name)} for name in shapes}
    paths: JSON = {}
    for route in operations:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, named)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lmstudio-proxy",
            "version": metadata.version("lmstudio-proxy"),
            "description": INFO_DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "http://127.0.0.1:8000", "description": "The default address"}],
        "security": [{"XApiKey": []}, {"ApiKey": []}, {"Bearer": []}],
        "tags": TAGS,
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": _error_responses(),
            "headers": HEADERS,
            "securitySchemes": {
                "XApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "ApiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


api = Endpoints()


@api.get(
    "/openapi.json",
    Operation("getOpenAPI", "This document", "meta", public=True, response_description="The OpenAPI document"),
)
async def openapi_json(request: Request) -> Response:
    state = request.app.state
    if getattr(state, "openapi_json", None) is None:  # built once per app, on first request
        state.openapi_json = json.dumps(document(request.app.routes), ensure_ascii=False).encode()
    return Response(state.openapi_json, media_type="application/json")


routes = api.routes
__all__ = ["STREAM_DESCRIPTION", "document", "routes"]
