"""HTTP endpoints for threads and their messages (the v5 SDK's `threads.*` and `messages.*`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.errors import InsufficientPermissions, ResourceNotFound, StreamAlreadyActive
from proxy.inputs import (
    parse_bool_param,
    parse_json_object,
    parse_message_update,
    parse_page,
    parse_thread_fields,
)
from proxy.render import blocks as render_blocks
from proxy.render import plain
from proxy.state import proxy_of
from proxy.store import now_iso

PUBLIC_THREAD_FIELDS = (
    "id",
    "created_at",
    "updated_at",
    "organization_id",
    "message_count",
    "last_message_at",
    "title",
    "metadata",
    "assistant_id",
    "visible_in_ui",
    "last_model_used",
    "is_pinned",
    "pinned_at",
)


def _thread_json(request: Request, thread: dict[str, Any]) -> dict[str, Any]:
    registry = proxy_of(request).registry
    out = {k: thread.get(k) for k in PUBLIC_THREAD_FIELDS}
    out["object"] = "thread"
    out["organization_id"] = out["organization_id"] or "org_local"
    # Derived, not stored: a crash can never leave a thread stuck in "streaming".
    out["status"] = "streaming" if thread["id"] in registry.streams else "inactive"
    return out


def _message_json(message: dict[str, Any], output_mode: str | None = None) -> dict[str, Any]:
    content = message["content"]
    blocks = message["response_blocks"]
    if message["role"] == "assistant" and output_mode == "plain":
        content = plain(content)
    elif message["role"] == "assistant" and output_mode in ("structured", "blocks"):
        blocks = render_blocks(content)
    return {
        "id": message["id"],
        "object": "thread.message",
        "created_at": message["created_at"],
        "thread_id": message["thread_id"],
        "role": message["role"],
        "content": content,
        "metadata": message["metadata"],
        "response_blocks": blocks,
    }


def _owned_thread(request: Request, owner: str) -> dict[str, Any]:
    thread_id = request.path_params["thread_id"]
    thread = proxy_of(request).store.get_thread(thread_id)
    if thread is None:
        raise ResourceNotFound(f"Thread {thread_id} not found")
    if thread["owner"] != owner:
        raise InsufficientPermissions("You don't have permission to access this thread")
    return thread


def _not_streaming(request: Request, thread_id: str) -> None:
    if thread_id in proxy_of(request).registry.streams:
        raise StreamAlreadyActive("A response is streaming on this thread; cancel it first.", {"thread_id": thread_id})


async def list_threads(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    q = request.query_params
    page_params = parse_page(q, default_order="desc")
    filters: dict[str, Any] = {}
    for name in ("organization_id", "assistant_id"):
        if q.get(name):
            filters[name] = q[name]
    for name in ("visible_in_ui", "is_pinned"):
        value = parse_bool_param(q, name)
        if value is not None:
            filters[name] = value
    for cursor in (page_params.after, page_params.before):
        if cursor:
            _check_cursor(request, proxy.store.get_thread(cursor), owner, cursor)
    page = proxy.store.list_threads(
        owner,
        limit=page_params.limit,
        order=page_params.order,
        after=page_params.after,
        before=page_params.before,
        filters=filters,
    )
    data = [_thread_json(request, t) for t in page.rows]
    body: dict[str, Any] = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
        "limit": page_params.limit,
    }
    if parse_bool_param(q, "include_total"):
        body["total"] = proxy.store.count_threads(owner, filters)
    return JSONResponse(body)


def _check_cursor(request: Request, row: dict[str, Any] | None, owner: str, cursor: str) -> None:
    """A cursor must name one of the caller's own items; anything else is a 404, never a leak."""
    if row is None or row.get("owner", owner) != owner:
        raise ResourceNotFound(f"Cursor {cursor} not found")


async def create_thread(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    body = await request.body()
    fields = parse_thread_fields(parse_json_object(body) if body.strip() else {}, creating=True)
    fields["organization_id"] = fields.get("organization_id") or "org_local"
    thread = proxy.store.create_thread(owner, **fields)
    return JSONResponse(_thread_json(request, thread), status_code=201)


async def get_thread(request: Request) -> Response:
    owner = proxy_of(request).auth.owner(request)
    return JSONResponse(_thread_json(request, _owned_thread(request, owner)))


async def update_thread(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    fields = parse_thread_fields(parse_json_object(await request.body()), creating=False)
    thread = _owned_thread(request, owner)
    if fields:
        proxy.store.update_thread(thread["id"], **fields)
    updated = proxy.store.get_thread(thread["id"])
    assert updated is not None
    return JSONResponse(_thread_json(request, updated))


async def delete_thread(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    thread = _owned_thread(request, owner)
    _not_streaming(request, thread["id"])
    proxy.store.delete_thread(thread["id"])
    return Response(status_code=204)


async def delete_all_threads(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    keep = set(proxy.registry.streams)  # a streaming thread is never deleted under its stream
    deleted = proxy.store.delete_threads(owner, request.query_params.get("organization_id") or None, keep)
    return JSONResponse({"deleted": deleted, "message": f"Deleted {deleted} thread(s)"})


async def _pin(request: Request, pinned: bool) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    thread = _owned_thread(request, owner)
    pinned_at = (thread["pinned_at"] or now_iso()) if pinned else None
    proxy.store.update_thread(thread["id"], is_pinned=pinned, pinned_at=pinned_at)
    return JSONResponse(
        {
            "id": thread["id"],
            "is_pinned": pinned,
            "pinned_at": pinned_at,
            "message": "Thread pinned" if pinned else "Thread unpinned",
        }
    )


async def pin_thread(request: Request) -> Response:
    return await _pin(request, True)


async def unpin_thread(request: Request) -> Response:
    return await _pin(request, False)


async def list_messages(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    thread = _owned_thread(request, owner)
    q = request.query_params
    page_params = parse_page(q, default_order="asc")
    for cursor in (page_params.after, page_params.before):
        if cursor and proxy.store.get_message(thread["id"], cursor) is None:
            raise ResourceNotFound(f"Cursor {cursor} not found")
    page = proxy.store.list_messages(
        thread["id"],
        limit=page_params.limit,
        order=page_params.order,
        after=page_params.after,
        before=page_params.before,
    )
    mode = q.get("output_mode")
    data = [_message_json(m, mode) for m in page.rows]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": page.has_more,
        }
    )


def _owned_message(request: Request, owner: str) -> dict[str, Any]:
    thread = _owned_thread(request, owner)
    message_id = request.path_params["message_id"]
    message = proxy_of(request).store.get_message(thread["id"], message_id)
    if message is None:
        raise ResourceNotFound(f"Message {message_id} not found in thread {thread['id']}")
    return message


async def update_message(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    content, metadata = parse_message_update(parse_json_object(await request.body()))
    message = _owned_message(request, owner)
    _not_streaming(request, message["thread_id"])
    proxy.store.update_message(message["id"], content, metadata)
    updated = proxy.store.get_message(message["thread_id"], message["id"])
    assert updated is not None
    body = _message_json(updated)
    body["updated_at"] = updated["updated_at"]
    return JSONResponse(body)


async def delete_message(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    message = _owned_message(request, owner)
    _not_streaming(request, message["thread_id"])
    proxy.store.delete_message(message["id"])
    return JSONResponse({"id": message["id"], "deleted": True, "object": "thread.message.deleted"})


routes = [
    Route("/v1/threads", list_threads, methods=["GET"]),
    Route("/v1/threads", create_thread, methods=["POST"]),
    Route("/v1/threads", delete_all_threads, methods=["DELETE"]),
    Route("/v1/threads/{thread_id}", get_thread, methods=["GET"]),
    Route("/v1/threads/{thread_id}", update_thread, methods=["PATCH"]),
    Route("/v1/threads/{thread_id}", delete_thread, methods=["DELETE"]),
    Route("/v1/threads/{thread_id}/pin", pin_thread, methods=["POST"]),
    Route("/v1/threads/{thread_id}/unpin", unpin_thread, methods=["POST"]),
    Route("/v1/threads/{thread_id}/messages", list_messages, methods=["GET"]),
    Route("/v1/threads/{thread_id}/messages/{message_id}", update_message, methods=["PATCH"]),
    Route("/v1/threads/{thread_id}/messages/{message_id}", delete_message, methods=["DELETE"]),
]
