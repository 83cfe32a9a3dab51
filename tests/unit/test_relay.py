"""The SSE writer (`EventStream._write`): fast text gathers between writes; a stream's end never waits.

A fake stream and `send` (unit test): the writer's only collaborators are the outbox, the
registry's write interval and metrics, and the ASGI `send`.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from types import SimpleNamespace
from typing import Any, cast

from proxy import sse
from proxy.flag import Flag
from proxy.outbox import Outbox
from proxy.relay import RAW_SEND, EventStream

HOUR = 3600.0  # a write interval no test may wait out: only the stream's end may cut it short


class _WatchedOutbox(Outbox):
    """An outbox that tells the test when the writer starts a pause."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = asyncio.Event()

    async def pause(self, seconds: float) -> None:
        self.paused.set()
        await super().pause(seconds)


def _stream(outbox: Outbox, interval: float) -> Any:
    metrics = SimpleNamespace(relay=SimpleNamespace(observe=lambda seconds: None))
    registry = SimpleNamespace(write_interval=interval, metrics=metrics)
    overhead_ms = lambda request_started, lm_done: "1.00"  # noqa: E731  (ActiveStream.overhead_ms)
    answered = Flag()
    answered.set()  # LM Studio has answered (tests of the opening set their own)
    return SimpleNamespace(
        outbox=outbox, registry=registry, last_sent=0.0, first_answer_at=0.0, overhead_ms=overhead_ms,
        answered=answered, final=None, opener=None, committed=False,
    )  # fmt: skip


SCOPE = {"type": "http", "state": {"started": 0.0}}  # RequestContext's state


class _Send:
    """The ASGI `send`: records each body and signals it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.sent = asyncio.Event()

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        self.bodies.append(message["body"])
        self.sent.set()


async def test_the_end_is_written_at_once_during_a_pause_after_created_and_text() -> None:
    outbox = _WatchedOutbox()
    send = _Send()
    writer = asyncio.create_task(EventStream(cast(Any, _stream(outbox, HOUR)))._write(send))
    created = {"event": "response.created", "response_id": "r"}
    outbox.push(cast(Any, created))
    outbox.push_text("response.content_delta", "delta", "a")
    async with asyncio.timeout(10):
        await send.sent.wait()  # the first text is written at once, behind `response.created`
    assert send.bodies == [sse.frames([created, {"event": "response.content_delta", "delta": "a"}])]

    # The next text waits for the interval: that write counted as text though it began with
    # `response.created` (it did not, and every stream made a second write right away).
    outbox.push_text("response.content_delta", "delta", "b")
    async with asyncio.timeout(10):
        await outbox.paused.wait()
    assert len(send.bodies) == 1

    completed = {"event": "response.completed", "response_id": "r"}
    outbox.push(cast(Any, completed))
    outbox.close()
    async with asyncio.timeout(10):  # the interval is an hour: only the close can end the pause
        await writer
    end = sse.frames([{"event": "response.content_delta", "delta": "b"}, completed]) + sse.DONE
    assert send.bodies[1:] == [end]


async def test_the_first_batch_leaves_with_the_headers_in_the_responses_own_task() -> None:
    # LM Studio's first token is in the outbox when the response opens (another server than
    # uvicorn: the pump cannot open it): it goes out right after the headers, without waiting
    # for the writer task's first turn of the event loop.
    outbox = Outbox()
    outbox.push_text("response.content_delta", "delta", "first")
    stream = _stream(outbox, HOUR)
    stream.finished = SimpleNamespace(is_set=lambda: True)
    handler = asyncio.current_task()
    sent: list[tuple[str, bytes, bool]] = []
    first_body = asyncio.Event()
    disconnect = asyncio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append((message["type"], message["body"], asyncio.current_task() is handler))
            first_body.set()
        else:
            sent.append((message["type"], b"", asyncio.current_task() is handler))

    async def receive() -> dict[str, Any]:
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def leave_after_the_first_body() -> None:
        await first_body.wait()
        disconnect.set()

    leaving = asyncio.ensure_future(leave_after_the_first_body())
    async with asyncio.timeout(10):
        await EventStream(cast(Any, stream))(SCOPE, receive, send)
    await leaving
    body = sse.frames([{"event": "response.content_delta", "delta": "first"}])
    assert sent[:2] == [("http.response.start", b"", True), ("http.response.body", body, True)]


class _Server:
    """uvicorn's side: its `send` (a bound method, as RAW_SEND holds it) and its flow control."""

    def __init__(self, write_paused: bool) -> None:
        self.flow = SimpleNamespace(write_paused=write_paused)
        self.sent: list[tuple[str, asyncio.Task[Any] | None]] = []

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append((message["type"], asyncio.current_task()))


async def _opening(write_paused: bool) -> tuple[_Server, asyncio.Task[None], asyncio.Task[Any] | None]:
    """An SSE response waiting for LM Studio's first answer; this task (the pump) then pushes the
    answer and calls the opener, as `ActiveStream._drain` does. Returns the server, the response's
    task, and this one."""
    outbox = Outbox()
    stream = _stream(outbox, HOUR)
    stream.answered = Flag()
    finished = Flag()
    stream.finished = finished
    server = _Server(write_paused)

    async def through_middleware(message: MutableMapping[str, Any]) -> None:
        await server.send(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    scope = {**SCOPE, RAW_SEND: server.send}
    response = asyncio.create_task(EventStream(cast(Any, stream))(scope, receive, through_middleware))
    await asyncio.sleep(0)  # the response's first step (FIFO): up to its wait for the first answer
    assert stream.opener is not None
    outbox.push_text("response.content_delta", "delta", "first")
    stream.answered.set()
    opener, stream.opener = stream.opener, None
    await opener()
    outbox.push(cast(Any, {"event": "response.completed", "response_id": "r"}))
    outbox.close()
    finished.set()
    async with asyncio.timeout(10):
        await response
    return server, response, asyncio.current_task()


async def test_the_pump_opens_the_response_in_its_own_step_when_writing_cannot_wait() -> None:
    server, _, pump = await _opening(write_paused=False)
    # The headers and the first token left from the pump's step, before the response's task woke.
    assert server.sent[:2] == [("http.response.start", pump), ("http.response.body", pump)]
    assert [kind for kind, _ in server.sent[2:]] == ["http.response.body"]  # the rest, [DONE] included:
    assert all(task not in (pump, None) for _, task in server.sent[2:])  # the response's writer


async def test_a_client_that_reads_slowly_gets_its_response_opened_by_its_own_task() -> None:
    # uvicorn would make the pump wait for the client: the pump leaves the opening to the response.
    server, response, _ = await _opening(write_paused=True)
    assert server.sent[:2] == [("http.response.start", response), ("http.response.body", response)]


class _HeldOutbox(Outbox):
    """An outbox whose pauses last until the test releases them; counts the writer's waits."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0
        self.waiting = asyncio.Event()
        self.pauses = 0
        self.paused = asyncio.Event()
        self.release = asyncio.Event()

    async def wait(self) -> None:
        self.waits += 1
        self.waiting.set()
        await super().wait()

    async def pause(self, seconds: float) -> None:
        self.pauses += 1
        self.paused.set()
        await self.release.wait()
        self.release.clear()


async def test_while_text_outpaces_the_interval_the_writer_pauses_again_without_waking_for_a_token() -> None:
    outbox = _HeldOutbox()
    send = _Send()
    writer = asyncio.create_task(EventStream(cast(Any, _stream(outbox, HOUR)))._write(send))

    async def next_pause() -> None:
        async with asyncio.timeout(10):
            await outbox.paused.wait()
        outbox.paused.clear()

    async def next_body() -> bytes:
        async with asyncio.timeout(10):
            await send.sent.wait()
        send.sent.clear()
        return send.bodies[-1]

    def delta(text: str) -> bytes:
        return sse.frame({"event": "response.content_delta", "delta": text})

    outbox.push_text("response.content_delta", "delta", "a")
    assert await next_body() == delta("a")  # the first text at once
    outbox.push_text("response.content_delta", "delta", "b")
    await next_pause()  # woken by "b", it pauses for the interval
    waits = outbox.waits
    outbox.push_text("response.content_delta", "delta", "c")
    outbox.release.set()
    assert await next_body() == delta("bc")
    await next_pause()  # paced: straight into the next pause, with no wait (and wake-up) for a token
    assert outbox.waits == waits
    outbox.push_text("response.content_delta", "delta", "d")
    outbox.release.set()
    assert await next_body() == delta("d")
    await next_pause()
    outbox.waiting.clear()
    outbox.release.set()  # nothing came during this pause: the writer waits for text again
    async with asyncio.timeout(10):
        await outbox.waiting.wait()
    assert outbox.waits == waits + 1 and len(send.bodies) == 3
    outbox.close()
    async with asyncio.timeout(10):
        await writer
    assert send.bodies[-1] == sse.DONE


async def test_a_client_gone_at_the_first_write_stops_the_stream_quietly() -> None:
    outbox = Outbox()
    outbox.push_text("response.content_delta", "delta", "first")
    stream = _stream(outbox, HOUR)
    stopped: list[bool] = []

    async def client_gone() -> None:
        stopped.append(True)

    stream.finished = SimpleNamespace(is_set=lambda: False)
    stream.client_gone = client_gone

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise ConnectionResetError("the client went away")  # a server that raises, unlike uvicorn

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # never: the failed write ends the response
        return {"type": "http.disconnect"}

    async with asyncio.timeout(10):
        await EventStream(cast(Any, stream))(SCOPE, receive, send)  # no exception
    assert stopped == [True]  # and the stream was stopped, as when the writer task's send fails


async def test_the_headers_go_through_the_middleware_send_and_the_body_straight_to_the_servers() -> None:
    # ProxyApp keeps the server's own `send` in the scope: the wrappers between act on the
    # headers only (RequestContext adds X-Request-Id there), so the body skips them.
    outbox = Outbox()
    outbox.push_text("response.content_delta", "delta", "a")
    outbox.push(cast(Any, {"event": "response.completed", "response_id": "r"}))
    outbox.close()
    stream = _stream(outbox, HOUR)
    stream.finished = SimpleNamespace(is_set=lambda: True)
    wrapped: list[str] = []
    server: list[str] = []

    async def through_middleware(message: MutableMapping[str, Any]) -> None:
        wrapped.append(message["type"])

    async def servers_send(message: MutableMapping[str, Any]) -> None:
        server.append(message["type"])

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async with asyncio.timeout(10):
        await EventStream(cast(Any, stream))({**SCOPE, RAW_SEND: servers_send}, receive, through_middleware)
    assert wrapped == ["http.response.start"]
    assert server == ["http.response.body"]  # the whole stream in one write, [DONE] included


async def test_the_app_keeps_the_servers_send_in_the_scope(tmp_path: Any) -> None:
    from proxy.app import create_app, proxy_of_app
    from proxy.config import Config

    app = create_app(Config(), database=str(tmp_path / "proxy.db"))
    seen: list[object] = []

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope.get(RAW_SEND))

    app.middleware_stack = endpoint  # what Starlette would run: only the scope matters here

    async def send(message: MutableMapping[str, Any]) -> None:
        pass

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    try:
        await app({"type": "http", "path": "/", "headers": []}, receive, send)
    finally:
        proxy_of_app(app).store.close()
    assert seen == [send]
