"""HTTP endpoints for assistants (v5's `assistants.*`), kept per API key in the local store.

An assistant is private to the key that created it: another key's id answers 403, as a
thread does. `store.get_assistant(owner, id)` is what a create request uses to apply one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from proxy.errors import ValidationError
from proxy.routing import Endpoint, Endpoints, Operation, OperationRoute
from proxy.state import Proxy, owned, proxy_of
from proxy.wire import assistants as shapes
from proxy.wire.decode import decode_body, decode_query

DEFAULT_TEMPERATURE = 0.7
api = Endpoints()


def _put(path: str, operation: Operation) -> Callable[[Endpoint], Endpoint]:
    """v5 updates an assistant with PUT (`Endpoints` has no `put`)."""

    def register(endpoint: Endpoint) -> Endpoint:
        api.routes.append(OperationRoute(path, endpoint, "PUT", operation))
        return endpoint

    return register


def _refuse(names: list[str]) -> None:
    if names:
        errors = [{"field": n, "message": f"not supported by lmstudio-proxy: {n}"} for n in names]
        raise ValidationError(f"not supported by lmstudio-proxy: {', '.join(names)}", {"errors": errors})


def _summary(a: dict[str, Any]) -> shapes.AssistantSummary:
    return {
        "id": a["id"],
        "object": "assistant",
        "name": a["name"],
        "description": a["description"],
        "is_default": a["is_default"],
        "created_at": a["created_at"],
        "updated_at": a["updated_at"],
        "access_mode": "private",
        "api_enabled": True,
        "is_active": a["is_active"],
        "temperature": a["temperature"] if a["temperature"] is not None else DEFAULT_TEMPERATURE,
        "user_access_level": "owner",
        "workflow_based": False,
    }


def _standard(a: dict[str, Any]) -> shapes.AssistantStandard:
    return {**_summary(a), "default_model_key": a["model"] or "", "context_strategy": "full"}


def _full(a: dict[str, Any]) -> shapes.Assistant:
    return {
        **_summary(a),
        "organization_id": a["organization_id"],
        "created_by": "usr_" + a["owner"][:16],
        "deleted_at": None,
        "default_model_key": a["model"],
        "context_strategy": "full",
        "instructions": a["instructions"],
        "top_p": a["top_p"],
        "max_completion_tokens": a["max_tokens"],
        "output_mode": a["output_mode"],
        "tool_configurations": a["tool_configurations"],
        "metadata": a["metadata"],
    }


async def _columns(proxy: Proxy, given: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
    """Request fields (only those the client sent) → store columns; an unknown model is a 404."""
    cols: dict[str, Any] = {}
    for field in ("name", "description", "instructions", "temperature", "is_default", "is_active"):
        if field in given:
            cols[field] = given[field]
    if cols.get("is_active", True) is None:
        cols["is_active"] = True
    if cols.get("is_default", False) is None:
        cols["is_default"] = False
    if "default_model_key" in given:
        if given["default_model_key"]:
            await proxy.catalog.resolve(given["default_model_key"])  # ResourceNotFound lists what exists
        cols["model"] = given["default_model_key"] or None
    if "tool_configurations" in given:
        cols["tool_configurations"] = given["tool_configurations"]
    for field in ("metadata", "assistant_metadata"):
        if field in given:
            cols["metadata"] = given[field] or {}
    settings = {k: (current or {}).get(k) for k in ("top_p", "max_tokens", "output_mode")}
    for field, name in (("top_p", "top_p"), ("max_completion_tokens", "max_tokens"), ("output_mode", "output_mode")):
        if field in given:
            settings[name] = given[field]
            cols["settings"] = {k: v for k, v in settings.items() if v is not None}
    return cols


def _owned(request: Request, owner: str) -> dict[str, Any]:
    assistant_id = request.path_params["assistant_id"]
    return owned(proxy_of(request).store.find_assistant(assistant_id), owner, "assistant", assistant_id)


@api.get(
    "/v1/assistants",
    Operation(
        "listAssistants", "List the caller's assistants", "assistants", response=shapes.AssistantList,
        query=shapes.AssistantListQuery, errors=(422,), response_description="A page of assistants",
    ),
)  # fmt: skip
async def list_assistants(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    q = decode_query(shapes.AssistantListQuery, request.query_params)
    visible = q.visible_in_chat if q.visible_in_chat is not None else q.for_chat
    # Every local assistant is private, visible in chat and uses no vector store.
    nothing = (q.access_mode not in (None, "private")) or q.vector_store_id is not None or visible is False
    rows, total = proxy.store.list_assistants(
        owner, organization_id=q.organization_id, search=q.search, include_inactive=q.include_inactive,
        sort_by=q.sort_by, sort_order=q.sort_order, limit=q.limit, offset=q.offset,
    )  # fmt: skip
    if nothing:
        rows, total = [], 0
    shape = {"summary": _summary, "standard": _standard, "full": _full}[q.fields]
    body: shapes.AssistantList = {
        "assistants": [shape(a) for a in rows],
        "total": total,
        "organization_id": q.organization_id,
        "pagination": {"total": total, "limit": q.limit, "offset": q.offset, "has_more": q.offset + len(rows) < total},
        "filters_applied": {
            "search": q.search,
            "access_mode": q.access_mode,
            "include_inactive": q.include_inactive,
            "sort_by": q.sort_by,
            "sort_order": q.sort_order,
        },
        "user_context": {"user_id": "usr_" + owner[:16], "organization_count": 1},
    }
    return JSONResponse(body)


@api.post(
    "/v1/assistants",
    Operation(
        "createAssistant", "Create an assistant", "assistants", response=shapes.Assistant, status=201,
        body=shapes.AssistantCreate, errors=(400, 404, 413, 422, 503), response_description="The new assistant",
        description="Fields with no local meaning are refused with a 422 `not supported by lmstudio-proxy: …` "
        "unless they are null. `default_model_key` must name a model LM Studio has (or an alias).",
    ),
)  # fmt: skip
async def create_assistant(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    req = decode_body(shapes.AssistantCreate, await request.body())
    _refuse(req.refused())
    given = req.model_dump(exclude_unset=True, exclude=set(shapes.REFUSED))
    cols = await _columns(proxy, given, None)
    cols["organization_id"] = req.organization_id
    cols.setdefault("temperature", None)
    created = proxy.store.create_assistant(owner, cols)
    return JSONResponse(_full(created), status_code=201)


@api.get(
    "/v1/assistants/{assistant_id}",
    Operation("getAssistant", "Get an assistant", "assistants", response=shapes.Assistant, errors=(403, 404)),
)
async def get_assistant(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    return JSONResponse(_full(_owned(request, owner)))


@_put(
    "/v1/assistants/{assistant_id}",
    Operation(
        "updateAssistant", "Update an assistant", "assistants", response=shapes.Assistant,
        body=shapes.AssistantUpdate, errors=(400, 403, 404, 413, 422, 503),
        response_description="The updated assistant",
        description="Only the fields given change; null clears one (name cannot be null). Fields with no local "
        "meaning are refused as on create.",
    ),
)  # fmt: skip
async def update_assistant(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    req = decode_body(shapes.AssistantUpdate, await request.body())
    _refuse(req.refused())
    if "name" in req.model_fields_set and req.name is None:
        errors = [{"field": "name", "message": "cannot be null"}]
        raise ValidationError("Invalid request: name: cannot be null", {"errors": errors})
    current = _owned(request, owner)
    cols = await _columns(proxy, req.model_dump(exclude_unset=True, exclude=set(shapes.REFUSED)), current)
    if cols:
        proxy.store.update_assistant(current["id"], cols)
    updated = proxy.store.find_assistant(current["id"])
    assert updated is not None
    return JSONResponse(_full(updated))


@api.delete(
    "/v1/assistants/{assistant_id}",
    Operation(
        "deleteAssistant", "Delete an assistant", "assistants", response=shapes.AssistantDeleted, errors=(403, 404),
        description="Deleted for good. Threads that name it keep its id.",
    ),
)  # fmt: skip
async def delete_assistant(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    assistant = _owned(request, owner)
    proxy.store.delete_assistant(assistant["id"])
    body: shapes.AssistantDeleted = {"id": assistant["id"], "object": "assistant.deleted", "deleted": True}
    return JSONResponse(body)


routes = api.routes
