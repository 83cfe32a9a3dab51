"""HTTP endpoints for responses: create (JSON or SSE), cancel, active streams, usage, models, health."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import anyio
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from proxy.bridge import prediction_config
from proxy.errors import InsufficientPermissions, ProxyError, ResourceNotFound, ShuttingDown, ValidationError
from proxy.inputs import CreateRequest, parse_create, parse_json_object
from proxy.render import OUTPUT_MODES
from proxy.state import proxy_of
from proxy.store import now_iso
from proxy.streams import ActiveStream, StreamSpec, usage_json

REASONING_LEVELS = (
    ("off", "No reasoning", False),
    ("low", "Brief reasoning", False),
    ("medium", "Balanced reasoning (the model's default)", True),
    ("high", "Extended reasoning", False),
)


def _history(stored: list[tuple[str, str]], req: CreateRequest) -> list[dict[str, str]]:
    """The messages LM Studio gets: system prompt, then the thread, then the new inputs.

    Empty messages are skipped and consecutive assistant messages merged: the SDK merges
    consecutive user messages itself but rejects consecutive assistant ones.
    """
    messages: list[dict[str, str]] = []
    system = [text for role, text in req.inputs if role == "system"]
    if req.instructions:
        system.insert(0, req.instructions)
    if system:
        messages.append({"role": "system", "content": "\n\n".join(system)})
    for role, text in [*stored, *((r, t) for r, t in req.inputs if r != "system")]:
        if not text or role not in ("user", "assistant"):
            continue
        if messages and role == "assistant" and messages[-1]["role"] == "assistant":
            messages[-1]["content"] += "\n\n" + text
        else:
            messages.append({"role": role, "content": text})
    return messages


async def create_response(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    req = parse_create(parse_json_object(await request.body()))
    if not proxy.registry.accepting:
        raise ShuttingDown("The proxy is shutting down; no new responses are accepted.")
    # Everything that can fail or wait happens before anything is stored.
    model = await proxy.catalog.resolve(req.model)
    stored: list[tuple[str, str]] = []
    if req.thread_id:
        thread = proxy.store.get_thread(req.thread_id)
        if thread is None:
            raise ResourceNotFound(f"Thread {req.thread_id} not found")
        if thread["owner"] != owner:
            raise InsufficientPermissions("You don't have permission to use this thread")
        proxy.registry.check_free(req.thread_id)
        stored = proxy.store.history(req.thread_id)
    # From here to registry.start() nothing awaits, so the 409 check above cannot go stale.
    thread_fields = {
        "organization_id": req.organization_id or "org_local",
        "assistant_id": req.assistant_id,
        "metadata": req.metadata,
        "visible_in_ui": req.store,
    }
    inputs = [(r, t) for r, t in req.inputs if r != "system"]
    thread_id, response_id, message_ids, created = proxy.store.begin_response(
        owner, req.thread_id or "", model, inputs, thread_fields
    )
    spec = StreamSpec(
        owner=owner,
        thread_id=thread_id,
        response_id=response_id,
        message_ids=message_ids,
        thread_created=created,
        model=model,
        messages=_history(stored, req),
        prediction_config=prediction_config(req.temperature, req.top_p, req.max_tokens, None),
        output_mode=req.output_mode,
        trace_id=request.state.trace_id,
        streaming=req.stream,
    )
    stream = proxy.registry.start(spec)
    if not req.stream:
        return await _wait_json(request, stream)
    # The prediction goes to LM Studio first (the SDK's send takes a few loop turns); setting
    # up the response meanwhile would delay it, and with it the first token.
    try:
        await stream.sent.wait()
    except BaseException:
        await asyncio.shield(stream.client_gone())
        raise
    return EventSource(stream, proxy.config.cancel.drain_timeout_seconds + 2)


class EventSource(EventSourceResponse):
    """sse-starlette's response for one stream; a client that leaves before the end stops it.

    It also drops the anyio cancel scope sse-starlette puts around every write: without a send
    timeout (we set none) that scope does nothing, and it was ~6 % of the proxy's CPU per
    relayed token.
    """

    def __init__(self, stream: ActiveStream, shutdown_grace_period: float) -> None:
        super().__init__(
            stream.sse_body(),
            ping=0,
            sep="\n",
            # On shutdown sse-starlette would cancel the body at once; the grace period lets the
            # stream end itself with SERVER_SHUTTING_DOWN (see app._watch_for_exit).
            shutdown_event=anyio.Event(),
            shutdown_grace_period=shutdown_grace_period,
        )
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when the client left before the body started, which the body can't notice.
            if not self.stream.finished.is_set():
                await asyncio.shield(self.stream.client_gone())

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        await send(message)


async def _wait_json(request: Request, stream: ActiveStream) -> Response:
    """Non-streaming: wait for the outcome; a client that goes away stops the prediction too."""
    disconnect = asyncio.ensure_future(_wait_disconnect(request))
    finished = asyncio.ensure_future(stream.finished.wait())
    try:
        await asyncio.wait({disconnect, finished}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        disconnect.cancel()
        if not finished.done():
            await asyncio.shield(stream.client_gone())
            finished.cancel()
    final = stream.final or {}
    if final.get("status") == "failed":
        error = final["error"]
        assert isinstance(error, ProxyError)
        raise error
    s = stream.spec
    text = final.get("rendered", final.get("text", ""))
    blocks = final.get("blocks")
    usage = usage_json(final["usage"])
    message_id = final.get("message_id")
    body: dict[str, Any] = {
        "success": True,
        "thread_id": s.thread_id,
        "response_id": s.response_id,
        "response": text,
        "is_summarized": False,
        "response_blocks": blocks,
        "assistant_id": None,
        "id": s.response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": final["status"],
        "model": s.model,
        "output": [
            {
                "type": "message",
                "id": message_id or s.response_id,
                "status": final["status"],
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": usage,
    }
    response = JSONResponse(body)
    # Time in the proxy outside LM Studio: before LM Studio was asked, and after it was done.
    overhead = (stream.lm_started - request.state.started) + (time.perf_counter() - stream.lm_finished)
    response.headers["X-Proxy-Overhead-Ms"] = f"{overhead * 1000:.2f}"
    return response


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_stream(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    thread_id = request.path_params["thread_id"]
    thread = proxy.store.get_thread(thread_id)
    if thread is not None and thread["owner"] != owner:
        raise InsufficientPermissions("You don't have permission to cancel this stream")
    return JSONResponse(await proxy.registry.cancel(thread_id, owner))


async def active_streams(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    data = [
        {
            "thread_id": s.thread_id,
            "response_id": s.spec.response_id,
            "model": s.spec.model,
            "elapsed_seconds": round(s.elapsed(), 3),
            "partial_content_length": s.partial_length(),
            "cancel_mode_now": s.mode_now(),
        }
        for s in proxy.registry.for_owner(owner)
    ]
    return JSONResponse({"object": "list", "data": data})


async def output_modes(request: Request) -> Response:
    proxy_of(request).auth.owner(request)
    modes = [{"mode": m, "description": d, "is_default": default} for m, d, default in OUTPUT_MODES]
    return JSONResponse({"success": True, "output_modes": modes})


async def reasoning_levels(request: Request) -> Response:
    proxy_of(request).auth.owner(request)
    levels = [{"level": lv, "description": d, "is_default": default} for lv, d, default in REASONING_LEVELS]
    return JSONResponse({"success": True, "reasoning_levels": levels})


async def list_models(request: Request) -> Response:
    proxy = proxy_of(request)
    proxy.auth.owner(request)
    await proxy.catalog.refresh()
    return JSONResponse({"object": "list", "data": proxy.catalog.listing(), "aliases": proxy.catalog.aliases})


async def usage(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    try:
        limit = int(request.query_params.get("limit") or 50)
        if not 1 <= limit <= 1000:
            raise ValueError
    except ValueError:
        raise ValidationError(
            "Invalid query parameters",
            {"errors": [{"field": "limit", "message": "must be an integer between 1 and 1000"}]},
        ) from None
    page = proxy.store.list_usage(owner, request.query_params.get("thread_id") or None, limit)
    data = [
        {
            k: r[k]
            for k in (
                "thread_id",
                "model",
                "status",
                "stop_reason",
                "cancel_mode",
                "input_tokens",
                "output_tokens",
                "total_tokens",
                "created_at",
            )
        }
        | {"response_id": r["id"]}
        for r in page.rows
    ]
    return JSONResponse({"object": "list", "data": data, "has_more": page.has_more})


async def health(request: Request) -> Response:
    proxy = proxy_of(request)
    lm = await proxy.bridge.health()
    return JSONResponse(
        {
            "status": "ok" if lm["reachable"] else "degraded",
            "lmstudio": lm,
            "active_streams": len(proxy.registry.streams),
            "database": proxy.store.path,
            "time": now_iso(),
        }
    )


routes = [
    Route("/v1/model/response", create_response, methods=["POST"]),
    Route("/v1/model/response/output-modes", output_modes, methods=["GET"]),
    Route("/v1/model/response/reasoning-levels", reasoning_levels, methods=["GET"]),
    Route("/v1/model/response/active", active_streams, methods=["GET"]),
    Route("/v1/model/response/{thread_id}/cancel", cancel_stream, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/usage", usage, methods=["GET"]),
    Route("/health", health, methods=["GET"]),
]
