"""HTTP endpoints for threads and their messages (the v5 SDK's `threads.*` and `messages.*`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Callable
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from proxy import relay, sse
from proxy.errors import ProxyError, ResourceNotFound, StreamAlreadyActive, ValidationError
from proxy.render import blocks as render_blocks
from proxy.render import plain
from proxy.routing import Endpoints, Operation
from proxy.state import Proxy, owned, proxy_of
from proxy.store import now_iso
from proxy.wire import bodies
from proxy.wire.decode import decode_body, decode_query
from proxy.wire.meta import GeneratedName, GenerateNameQuery, GenerateNameRequest
from proxy.wire.requests import (
    DeleteThreadsQuery,
    MessageListQuery,
    MessageUpdate,
    ThreadCreate,
    ThreadListQuery,
    ThreadUpdate,
)

ORGANIZATION = "org_local"
api = Endpoints()


def _thread_json(proxy: Proxy, thread: dict[str, Any], streaming: set[str] | None = None) -> bodies.Thread:
    """A thread's body; `streaming`: which threads have a running stream, when the caller knows already."""
    if streaming is None:
        streaming = proxy.registry.streaming([thread["id"]])
    return {
        "id": thread["id"],
        "object": "thread",
        "created_at": thread["created_at"],
        "updated_at": thread["updated_at"],
        "organization_id": thread["organization_id"] or ORGANIZATION,
        "message_count": thread["message_count"],
        "last_message_at": thread["last_message_at"],
        "title": thread["title"],
        "metadata": thread["metadata"],
        "assistant_id": thread["assistant_id"],
        # Derived, not stored: a crash can never leave a thread stuck in "streaming".
        "status": "streaming" if thread["id"] in streaming else "inactive",
        "visible_in_ui": thread["visible_in_ui"],
        "last_model_used": thread["last_model_used"],
        "is_pinned": thread["is_pinned"],
        "pinned_at": thread["pinned_at"],
    }


def _message_json(message: dict[str, Any], output_mode: str | None = None) -> bodies.Message:
    content = message["content"]
    blocks = None
    if message["role"] == "assistant" and output_mode == "plain":
        content = plain(content)
    elif message["role"] == "assistant" and output_mode in ("structured", "blocks"):
        blocks = render_blocks(content)
    body: bodies.Message = {
        "id": message["id"],
        "object": "thread.message",
        "created_at": message["created_at"],
        "thread_id": message["thread_id"],
        "role": message["role"],
        "content": content,
        "metadata": message["metadata"],
        "response_blocks": cast(list[bodies.ResponseBlock] | None, blocks),
    }
    if message.get("deleted_at"):
        body["deleted_at"] = message["deleted_at"]
    meta = message["metadata"]
    if "tool_calls" in meta:
        body["tool_calls"] = meta["tool_calls"]
    if "tool_call_id" in meta:
        body["tool_call_id"] = meta["tool_call_id"]
    return body


def _owned_thread(request: Request, owner: str) -> dict[str, Any]:
    thread_id = request.path_params["thread_id"]
    return owned(proxy_of(request).store.get_thread(thread_id), owner, "thread", thread_id)


def _not_streaming(proxy: Proxy, thread_id: str) -> None:
    if proxy.registry.streaming([thread_id]):
        raise StreamAlreadyActive("A response is streaming on this thread; cancel it first.", {"thread_id": thread_id})


@api.get(
    "/v1/threads",
    Operation(
        "listThreads", "List the caller's threads", "threads", response=bodies.ThreadList, query=ThreadListQuery,
        errors=(404, 422), response_description="A page of threads",
    ),
)  # fmt: skip
async def list_threads(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    q = decode_query(ThreadListQuery, request.query_params)
    filters = q.model_dump(include={"organization_id", "assistant_id", "visible_in_ui", "is_pinned"}, exclude_none=True)
    for cursor in (q.after, q.before):
        if cursor:
            row = proxy.store.get_thread(cursor)
            if row is None or row["owner"] != owner:  # another key's id is a 404, never a leak
                raise ResourceNotFound(f"Cursor {cursor} not found")
    page = proxy.store.list_threads(
        owner, limit=q.limit, order=q.order, after=q.after, before=q.before, filters=filters
    )
    streaming = proxy.registry.streaming([t["id"] for t in page.rows])  # one query on PostgreSQL, not one each
    data = [_thread_json(proxy, t, streaming) for t in page.rows]
    body: bodies.ThreadList = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
        "limit": q.limit,
    }
    if q.include_total:
        body["total"] = proxy.store.count_threads(owner, filters)
    return JSONResponse(body)


@api.post(
    "/v1/threads",
    Operation(
        "createThread", "Create a thread", "threads", response=bodies.Thread, status=201, body=ThreadCreate,
        body_required=False, errors=(400, 413, 422), response_description="The new thread",
    ),
)  # fmt: skip
async def create_thread(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    fields = decode_body(ThreadCreate, await request.body(), empty_is_object=True).model_dump(exclude_unset=True)
    fields["organization_id"] = fields.get("organization_id") or ORGANIZATION
    thread = proxy.store.create_thread(owner, **fields)
    return JSONResponse(_thread_json(proxy, thread), status_code=201)


@api.get("/v1/threads/{thread_id}", Operation("getThread", "Get a thread", "threads", bodies.Thread, errors=(403, 404)))
async def get_thread(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    return JSONResponse(_thread_json(proxy, _owned_thread(request, owner)))


@api.patch(
    "/v1/threads/{thread_id}",
    Operation(
        "updateThread", "Update a thread", "threads", response=bodies.Thread, body=ThreadUpdate,
        errors=(400, 403, 404, 413, 422), response_description="The updated thread",
    ),
)  # fmt: skip
async def update_thread(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    fields = decode_body(ThreadUpdate, await request.body()).model_dump(exclude_unset=True)
    thread = _owned_thread(request, owner)
    if "metadata" in fields:
        fields["metadata"] = fields["metadata"] or {}
    if "visible_in_ui" in fields:
        fields["visible_in_ui"] = fields["visible_in_ui"] is not False
    if fields:
        proxy.store.update_thread(thread["id"], **fields)
    updated = proxy.store.get_thread(thread["id"])
    assert updated is not None
    return JSONResponse(_thread_json(proxy, updated))


@api.delete(
    "/v1/threads/{thread_id}",
    Operation(
        "deleteThread", "Delete a thread and its messages", "threads", status=204, errors=(403, 404, 409),
        response_description="Deleted",
    ),
)  # fmt: skip
async def delete_thread(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    thread = _owned_thread(request, owner)
    _not_streaming(proxy, thread["id"])
    proxy.store.delete_thread(thread["id"])
    return Response(status_code=204)


@api.delete(
    "/v1/threads",
    Operation(
        "deleteThreads", "Delete all the caller's threads (except any streaming one)", "threads",
        response=bodies.ThreadsDeleted, query=DeleteThreadsQuery, response_description="How many were deleted",
    ),
)  # fmt: skip
async def delete_all_threads(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    q = decode_query(DeleteThreadsQuery, request.query_params)
    keep = {s["thread_id"] for s in proxy.registry.active(owner)}  # never deleted under its running stream
    deleted = proxy.store.delete_threads(owner, q.organization_id, keep)
    body: bodies.ThreadsDeleted = {"deleted": deleted, "message": f"Deleted {deleted} thread(s)"}
    return JSONResponse(body)


async def _pin(request: Request, pinned: bool) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    thread = _owned_thread(request, owner)
    pinned_at = (thread["pinned_at"] or now_iso()) if pinned else None
    proxy.store.update_thread(thread["id"], is_pinned=pinned, pinned_at=pinned_at)
    body: bodies.ThreadPin = {
        "id": thread["id"],
        "is_pinned": pinned,
        "pinned_at": pinned_at,
        "message": "Thread pinned" if pinned else "Thread unpinned",
    }
    return JSONResponse(body)


@api.post(
    "/v1/threads/{thread_id}/pin",
    Operation("pinThread", "Pin a thread", "threads", response=bodies.ThreadPin, errors=(403, 404)),
)
async def pin_thread(request: Request) -> Response:
    return await _pin(request, True)


@api.post(
    "/v1/threads/{thread_id}/unpin",
    Operation("unpinThread", "Unpin a thread", "threads", response=bodies.ThreadPin, errors=(403, 404)),
)
async def unpin_thread(request: Request) -> Response:
    return await _pin(request, False)


@api.get(
    "/v1/threads/{thread_id}/messages",
    Operation(
        "listMessages", "List a thread's messages", "messages", response=bodies.MessageList, query=MessageListQuery,
        errors=(403, 404, 422), response_description="A page of messages",
    ),
)  # fmt: skip
async def list_messages(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    thread = _owned_thread(request, owner)
    q = decode_query(MessageListQuery, request.query_params)
    for cursor in (q.after, q.before):
        if cursor and proxy.store.get_message(thread["id"], cursor) is None:
            raise ResourceNotFound(f"Cursor {cursor} not found")
    page = proxy.store.list_messages(
        thread["id"], limit=q.limit, order=q.order, after=q.after, before=q.before,
        include_deleted=bool(q.include_deleted),
    )  # fmt: skip
    data = [_message_json(m, q.output_mode) for m in page.rows]
    body: bodies.MessageList = {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
    }
    return JSONResponse(body)


def _owned_message(request: Request, owner: str) -> dict[str, Any]:
    thread = _owned_thread(request, owner)
    message_id = request.path_params["message_id"]
    message = proxy_of(request).store.get_message(thread["id"], message_id)
    if message is None:
        raise ResourceNotFound(f"Message {message_id} not found in thread {thread['id']}")
    return message


@api.patch(
    "/v1/threads/{thread_id}/messages/{message_id}",
    Operation(
        "updateMessage", "Update a message", "messages", response=bodies.Message, body=MessageUpdate,
        errors=(400, 403, 404, 409, 413, 422), response_description="The updated message",
        description="`metadata` is merged into the stored metadata: a key set to null is removed.",
    ),
)  # fmt: skip
async def update_message(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    update = decode_body(MessageUpdate, await request.body())
    message = _owned_message(request, owner)
    _not_streaming(proxy, message["thread_id"])
    proxy.store.update_message(message["id"], update.content, update.metadata)
    updated = proxy.store.get_message(message["thread_id"], message["id"])
    assert updated is not None
    body = _message_json(updated)
    body["updated_at"] = updated["updated_at"]
    return JSONResponse(body)


@api.delete(
    "/v1/threads/{thread_id}/messages/{message_id}",
    Operation("deleteMessage", "Delete a message", "messages", response=bodies.MessageDeleted, errors=(403, 404, 409)),
)
async def delete_message(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    message = _owned_message(request, owner)
    _not_streaming(proxy, message["thread_id"])
    proxy.store.delete_message(message["id"])
    body: bodies.MessageDeleted = {"id": message["id"], "deleted": True, "object": "thread.message.deleted"}
    return JSONResponse(body)


# -- generateName ---------------------------------------------------------------------------

TITLE_CONTEXT_MESSAGES = 10  # the last messages a title is written from
TITLE_MESSAGE_CHARS = 2000  # of each, so a long answer does not crowd out the question
TITLE_MAX_CHARS = 50
TITLE_SAMPLING: dict[str, Any] = {"temperature": 0.2, "max_tokens": 48}
TITLE_PROMPT = (
    "You write titles for conversations. Reply with one title of 2 to 5 words that says what the "
    "user wants. Reply with the title only: no quotes, no punctuation at the end, no explanation."
)
_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_LEAD = re.compile(r"^(?:[#>*+\-\s]|\d+[.)]\s)+|^(?:title|name)\s*:\s*", re.IGNORECASE)
_MARKS = re.compile(r"[*_`\"\u201c\u201d\u2018\u2019\[\]]")
_TRAIL = ".,:;!?-\u2013\u2014 '"


def _words(line: str) -> list[str]:
    line = _MARKS.sub("", _LEAD.sub("", _LEAD.sub("", line.strip())))
    return [w.strip(_TRAIL) for w in line.split() if w.strip(_TRAIL)]


def clean_title(text: str, fallback: str) -> str:
    """The model's answer as a 2-5 word title of at most 50 characters.

    Markdown, quotes, a `Title:` prefix and trailing punctuation go; the first line with two
    words or more wins. Too short an answer is completed from `fallback` (the user's words).
    """
    words: list[str] = []
    for line in _THINK.sub("", text).splitlines():
        words += _words(line)
        if len(words) >= 2:
            break
    if len(words) < 2:
        words += [w for w in _words(fallback) if w not in words]
    words = words[:5] if len(words) >= 2 else [*words, "conversation"][:2] if words else ["New", "conversation"]
    while len(" ".join(words)) > TITLE_MAX_CHARS and len(words) > 2:
        words.pop()
    return " ".join(words)[:TITLE_MAX_CHARS].strip()


def _title_prompt(history: list[tuple[str, str]]) -> list[dict[str, str]]:
    lines = [f"{role.capitalize()}: {content[:TITLE_MESSAGE_CHARS]}" for role, content in history]
    conversation = "\n\n".join(lines)
    return [
        {"role": "system", "content": TITLE_PROMPT},
        {"role": "user", "content": f"Conversation:\n\n{conversation}\n\nTitle:"},
    ]


@api.post(
    "/v1/threads/{thread_id}/generateName",
    Operation(
        "generateThreadName", "Generate the thread's title with the model", "threads",
        response=GeneratedName, body=GenerateNameRequest, body_required=False, query=GenerateNameQuery,
        errors=(400, 403, 404, 413, 422, 503), response_description="The title, now stored on the thread",
        description="From the last 10 messages of the thread, or the `messages` given (then nothing is read "
        "from the store). The model is `models.title_model`, else the default model. With `stream=true` the "
        "answer is text/event-stream: `thread.name.delta` events with the model's raw text, then "
        "`thread.name.completed` with this body (or `error` with an error body), then `[DONE]`.",
        stream_description="`thread.name.delta` {delta}, then `thread.name.completed` (the JSON body), then [DONE]",
    ),
)  # fmt: skip
async def generate_name(request: Request) -> Response:
    proxy = proxy_of(request)
    owner = proxy.auth.owner(request)
    req = decode_body(GenerateNameRequest, await request.body(), empty_is_object=True)
    query = decode_query(GenerateNameQuery, request.query_params)
    thread = _owned_thread(request, owner)
    history: list[tuple[str, str]]
    if req.messages is not None:
        history = [(m.role, m.content) for m in req.messages]
    else:
        history = [(role, content) for role, content, _ in proxy.store.history(thread["id"])]
    history = [(role, content) for role, content in history if content.strip()][-TITLE_CONTEXT_MESSAGES:]
    if not history:
        errors = [{"field": "messages", "message": "the thread has no messages: send `messages` to name it from"}]
        raise ValidationError("Nothing to name the thread from: it has no messages", {"errors": errors})
    model = await proxy.catalog.resolve(proxy.config.models.title_model or None)
    fallback = next((content for role, content in history if role == "user"), history[0][1])
    prompt = _title_prompt(history)

    def finish(text: str) -> GeneratedName:
        title = clean_title(text, fallback)
        proxy.store.update_thread(thread["id"], title=title)
        return {
            "success": True,
            "thread_id": thread["id"],
            "threadId": thread["id"],
            "name": title,
            "title": title,
            "model": model,
            "message": "Thread name generated successfully",
        }

    if not query.stream:
        return JSONResponse(finish(await proxy.backends.complete(model, prompt, **TITLE_SAMPLING)))
    return _NameStream(_name_events(proxy, model, prompt, finish))  # type: ignore[return-value]  # an ASGI app


class _NameStream:
    """The SSE response of generateName: writes the events, and stops them when the client leaves.

    A plain ASGI app (as `relay.EventStream` is): the prediction must stop as soon as the
    client goes, not at the next write after it, so a second task watches for the disconnect.
    """

    def __init__(self, events: AsyncGenerator[bytes]) -> None:
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await relay.respond(receive, send, self._write)
        finally:
            await self.events.aclose()  # cancels the prediction if it is still running

    async def _write(self, send: Send) -> None:
        async for chunk in self.events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _name_events(
    proxy: Proxy,
    model: str,
    prompt: list[dict[str, str]],
    finish: Callable[[str], GeneratedName],
) -> AsyncGenerator[bytes]:
    """The SSE body: the prediction runs in a task this generator owns (and cancels if the client goes)."""
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def on_text(text: str) -> None:
        queue.put_nowait(text)

    async def run() -> str:
        try:
            return await proxy.backends.complete(model, prompt, **TITLE_SAMPLING, on_text=on_text)
        finally:
            queue.put_nowait(None)

    task = asyncio.get_running_loop().create_task(run())
    try:
        while (delta := await queue.get()) is not None:
            yield sse.frame({"event": "thread.name.delta", "delta": delta})
        try:
            text = await task
        except ProxyError as exc:
            yield sse.frame({"event": "error", "success": False, "error": {"code": exc.code, "message": exc.message}})
        else:
            yield sse.frame({"event": "thread.name.completed", **finish(text)})
        yield sse.DONE
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


routes = api.routes
