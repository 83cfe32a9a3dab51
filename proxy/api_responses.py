"""HTTP endpoints for responses: create (JSON or SSE), cancel, active streams, usage, models, health."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from proxy.accept import accept
from proxy.errors import InsufficientPermissions, ResourceNotFound
from proxy.files import files_of
from proxy.outcomes import usage_json
from proxy.relay import EventStream
from proxy.render import OUTPUT_MODES
from proxy.routing import Endpoints, Operation
from proxy.state import proxy_of
from proxy.store import now_iso
from proxy.streams import NOT_YOUR_STREAM, ActiveStream
from proxy.wire import bodies
from proxy.wire.decode import decode_create, decode_query
from proxy.wire.events import STREAM_DESCRIPTION
from proxy.wire.meta import ModelListQuery
from proxy.wire.requests import CreateResponseRequest, UsageQuery

# Only what works: LM Studio's API has no reasoning-effort control, so a model reasons at its own
# level; other levels are refused (422) rather than accepted and ignored.
REASONING_LEVELS = (("medium", "The model's own reasoning (LM Studio has no effort control)", True),)
CLIENT_GONE = 499  # nginx's "client closed request": logged and counted, sent to nobody

api = Endpoints()


@api.post(
    "/v1/model/response",
    Operation(
        "createResponse", "Create a response (JSON, or SSE with stream: true)", "responses",
        response=bodies.ResponseBody, body=CreateResponseRequest, errors=(400, 403, 404, 409, 413, 422, 502, 503),
        response_description="The response: one JSON body, or (stream: true) an SSE stream",
        description="The user message is stored when the request is accepted, the assistant message when the "
        "prediction ends.\n\n" + STREAM_DESCRIPTION,
        stream_description=STREAM_DESCRIPTION, headers=(bodies.OVERHEAD_HEADER,),
    ),
)  # fmt: skip
async def create_response(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    req = decode_create(await _body(request))
    stream = await accept(proxy, owner, req, request.state.trace_id, files_of(request))
    if not req.stream:
        return await _wait_json(request, stream)
    # The prediction goes to LM Studio first (the SDK's send takes a few loop turns); setting
    # up the response meanwhile would delay it, and with it the first token. The response then
    # waits for LM Studio's first answer itself (`EventStream`), and may still be an HTTP error.
    try:
        await stream.sent.wait()
    except BaseException:
        await asyncio.shield(stream.client_gone())
        raise
    return EventStream(stream)  # type: ignore[return-value]  # an ASGI app, as Starlette allows


async def _body(request: Request) -> bytes:
    """The request's body, read straight from `receive`: Starlette's `Request.body()` goes through
    an async generator (registered with the event loop, then closed) and costs this path, the one
    every prediction waits on, about 30-50 µs on a slow machine (measured, interleaved A/B)."""
    parts: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)  # (one part: that part itself, not a copy)


async def _wait_json(request: Request, stream: ActiveStream) -> Response:
    """Non-streaming: wait for the outcome; a client that goes away stops the prediction too."""
    disconnect = asyncio.ensure_future(_wait_disconnect(request))
    finished = asyncio.ensure_future(stream.finished.wait())
    left = True
    try:
        await asyncio.wait({disconnect, finished}, return_when=asyncio.FIRST_COMPLETED)
        left = not finished.done()
    finally:
        disconnect.cancel()
        if left:  # (the stop may settle the outcome at once: still nobody is there to read it)
            finished.cancel()
            await asyncio.shield(stream.client_gone())
    final = stream.final
    if final is None or left:
        return Response(status_code=CLIENT_GONE)  # nobody is there to read an answer
    if final.error is not None:
        raise final.error
    s = stream.spec
    status: Literal["completed", "cancelled"] = "completed" if final.status == "completed" else "cancelled"
    body: bodies.ResponseBody = {
        "success": True,
        "thread_id": s.thread_id,
        "response_id": s.response_id,
        "response": final.rendered or final.text,
        "is_summarized": False,
        "response_blocks": final.blocks,
        "assistant_id": None,
        "id": s.response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": s.model,
        "output": [
            {
                "type": "message",
                "id": final.message_id or s.response_id,
                "status": status,
                "role": "assistant",
                "content": [{"type": "output_text", "text": final.rendered or final.text, "annotations": []}],
            }
        ],
        "usage": usage_json(final.usage),
    }
    if final.tool_calls:
        body["tool_calls"] = final.tool_calls
        body["stop_reason"] = "tool_calls"
    response = JSONResponse(body)
    response.headers[bodies.OVERHEAD_HEADER] = stream.overhead_ms(request.state.started, stream.lm_finished)
    return response


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@api.post(
    "/v1/model/response/{thread_id}/cancel",
    Operation(
        "cancelStream", "Cancel the stream running on a thread", "responses", response=bodies.CancelStreamResponse,
        errors=(403, 404), response_description="The stream was stopped (or had been: the same body again)",
        description="No body. 404 `No active stream found for this thread` when nothing runs there.",
    ),
)  # fmt: skip
async def cancel_stream(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    thread_id = request.path_params["thread_id"]
    try:  # the registry checks a running stream's owner itself: no store read before the stop
        return JSONResponse(await proxy.registry.cancel(thread_id, owner))
    except ResourceNotFound:
        thread = proxy.store.get_thread(thread_id)
        if thread is not None and thread["owner"] != owner:  # someone else's thread: 403, as for a running one
            raise InsufficientPermissions(NOT_YOUR_STREAM) from None
        raise


@api.get(
    "/v1/model/response/active",
    Operation(
        "listActiveStreams", "List the caller's running streams (proxy addition)", "responses",
        response=bodies.ActiveStreamList, response_description="The running streams",
    ),
)  # fmt: skip
async def active_streams(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    body: bodies.ActiveStreamList = {"object": "list", "data": proxy.registry.active(owner)}
    return JSONResponse(body)


@api.get(
    "/v1/model/response/output-modes",
    Operation("listOutputModes", "List output modes", "responses", response=bodies.OutputModes),
)
async def output_modes(request: Request) -> Response:
    proxy_of(request).auth.owner(request)
    body: bodies.OutputModes = {
        "success": True,
        "output_modes": [{"mode": m, "description": d, "is_default": default} for m, d, default in OUTPUT_MODES],
    }
    return JSONResponse(body)


@api.get(
    "/v1/model/response/reasoning-levels",
    Operation("listReasoningLevels", "List reasoning levels", "responses", response=bodies.ReasoningLevels),
)
async def reasoning_levels(request: Request) -> Response:
    proxy_of(request).auth.owner(request)
    body: bodies.ReasoningLevels = {
        "success": True,
        "reasoning_levels": [
            {"level": lv, "description": d, "is_default": default} for lv, d, default in REASONING_LEVELS
        ],
    }
    return JSONResponse(body)


@api.get(
    "/v1/models",
    Operation(
        "listModels", "List LM Studio models (v5's ModelsListResponse, and the playground's data/aliases)",
        "models", response=bodies.ModelList, query=ModelListQuery, errors=(422, 503),
        response_description="Loaded models first, then downloaded ones",
    ),
)  # fmt: skip
async def list_models(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    q = decode_query(ModelListQuery, request.query_params)
    await proxy.catalog.refresh()
    models = proxy.catalog.v5_listing(
        capabilities=q.include_capabilities,
        details=bool(q.include_details),
        pricing=bool(q.include_pricing),
        last_used=proxy.store.last_used_models(owner) if q.include_recent_usage else None,
    )
    body: bodies.ModelList = {
        "models": models,
        "total_count": len(models),
        "object": "list",
        "data": proxy.catalog.listing(),
        "aliases": proxy.catalog.aliases,
    }
    return JSONResponse(body)


@api.get(
    "/v1/usage",
    Operation(
        "listUsage", "List the caller's usage records (proxy addition)", "usage", response=bodies.UsageList,
        query=UsageQuery, errors=(422,), response_description="Usage records, newest first",
    ),
)  # fmt: skip
async def usage(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    query = decode_query(UsageQuery, request.query_params)
    page = proxy.store.list_usage(owner, query.thread_id, query.limit)
    body: bodies.UsageList = {
        "object": "list",
        "data": [
            {
                "response_id": r["id"],
                "thread_id": r["thread_id"],
                "model": r["model"],
                "status": r["status"],
                "stop_reason": r["stop_reason"],
                "cancel_mode": r["cancel_mode"],
                "input_tokens": r["input_tokens"],
                "output_tokens": r["output_tokens"],
                "total_tokens": r["total_tokens"],
                "created_at": r["created_at"],
            }
            for r in page.rows
        ],
        "has_more": page.has_more,
    }
    return JSONResponse(body)


@api.get(
    "/health",
    Operation(
        "health", "Proxy status, and whether LM Studio is reachable", "meta", response=bodies.Health, public=True,
        response_description="The status (200 also when LM Studio is unreachable, or one of several LM Studio "
        "hosts is: status degraded; `lmstudio.hosts` has each host). With "
        "auth.api_keys configured, a request without a valid key gets only {status: ok} (liveness).",
    ),
)  # fmt: skip
async def health(request: Request) -> Response:
    proxy = proxy_of(request)
    if not proxy.auth.open and not proxy.auth.accepts(request):
        # With keys configured, a caller without one learns only that the proxy is alive.
        return JSONResponse({"status": "ok"})
    body: bodies.Health = {
        "status": "ok",
        "lmstudio": await proxy.backends.health(),
        "active_streams": len(proxy.registry.streams),
        "database": proxy.store.path,
        "time": now_iso(),
    }
    # Degraded when any LM Studio host does not answer (requests still go to the others).
    hosts_down = any(h["state"] == "down" for h in body["lmstudio"].get("hosts", []))
    body["status"] = "ok" if body["lmstudio"]["reachable"] and not hosts_down else "degraded"
    return JSONResponse(body)


routes = api.routes
