"""The SSE response of one stream: writes its Outbox to the client; a client that leaves stops it.

A plain ASGI response, not a library's: it needs exactly three things — write batches as
they come (letting fast tokens gather for a moment, see `write_interval`), notice a client
that disconnects (then stop the stream: LM Studio gets its cancel), and end after `[DONE]`.
Shutdown needs nothing here: the server stops every stream first (`app.stop_streams`), and
each one ends itself with `SERVER_SHUTTING_DOWN` + `[DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.types import Receive, Scope, Send

from proxy import sse
from proxy.outbox import TEXT_EVENTS
from proxy.wire.bodies import OVERHEAD_HEADER

if TYPE_CHECKING:
    from proxy.streams import ActiveStream

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # reverse proxies: do not buffer the stream
]
_OVERHEAD_HEADER = OVERHEAD_HEADER.lower().encode()
# The scope key of the server's own `send` (`app.ProxyApp` puts it there). A stream's body
# messages go straight to it: every wrapper between (Starlette's two, RequestContext's, CORS)
# acts on `http.response.start` alone: four coroutine calls fewer a write (what that saves per
# token was within a shared 2-core machine's noise: see CHANGELOG.md).
RAW_SEND = "lmstudio_proxy.send"


# How long the response waits for LM Studio's first answer before it commits to SSE: a connection
# to LM Studio that died since the last request fails within it, and the client gets a 503 (with
# nothing stored) rather than a 200 and an error event. A live LM Studio answers well within it,
# and the first token then leaves with the response headers.
FIRST_ANSWER_GRACE_SECONDS = 0.25


class EventStream:
    """The `text/event-stream` response of one `ActiveStream`.

    It runs as soon as LM Studio has been sent the prediction, and waits for LM Studio's first
    answer (FIRST_ANSWER_GRACE_SECONDS at most) before it commits to SSE. When that answer
    comes, the pump opens the response itself (`ActiveStream.opener`): the headers and the first
    token leave in the pump's own step. Waking this response's task for them instead cost the
    first token about 0.1 ms on a slow machine: the event loop first polls for I/O and runs
    whatever else is ready. The writes that follow are this task's (`_write`).
    """

    def __init__(self, stream: ActiveStream) -> None:
        self.stream = stream
        self._last_write = 0.0  # loop time of the last write of text
        self._opened = False  # the headers are sent
        self._complete = False  # the whole body is sent ([DONE] included)
        self._open_failed: Exception | None = None  # opening it from the pump failed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self.stream
        body_send = scope.get(RAW_SEND) or send
        try:
            stream.opener = functools.partial(self._open_from_pump, scope, send, body_send)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FIRST_ANSWER_GRACE_SECONDS):
                        await stream.answered.wait()
            finally:
                stream.opener = None
            if self._open_failed is not None:
                if isinstance(self._open_failed, OSError):
                    return  # the client is gone (the `finally` stops the stream)
                raise self._open_failed
            if not self._opened:
                final = stream.final
                if stream.finished.is_set() and final is not None and final.error is not None:
                    raise final.error  # failed before it answered: an HTTP error, nothing stored
                try:
                    await self._open(scope, send, body_send)
                except OSError:  # the client is gone (as for the writer task below)
                    return
            if not self._complete:
                await stream_body(receive, body_send, self._write)
        finally:
            # Also when the client left before the body started, or sending failed.
            if not stream.finished.is_set():
                await asyncio.shield(stream.client_gone())

    async def _open(self, scope: Scope, send: Send, body_send: Send) -> None:
        """Commit to SSE: the headers (through the middleware's `send`), then what is ready (through
        the server's own, see RAW_SEND)."""
        stream = self.stream
        stream.committed = True
        # As on a JSON answer, but up to the first token: the proxy's own share of its wait.
        overhead = stream.overhead_ms(scope["state"]["started"], stream.first_answer_at)
        headers = [*HEADERS, (_OVERHEAD_HEADER, overhead.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        self._opened = True
        self._complete = not await self._write_ready(body_send)

    async def _open_from_pump(self, scope: Scope, send: Send, body_send: Send) -> None:
        """`ActiveStream.opener`: open the response in the pump's step, if writing cannot make the
        pump wait (a client that reads slowly must never hold LM Studio's stream up). Never raises:
        a failure is left to this response's own task, which wakes for the same answer."""
        if self._opened or not _never_waits(body_send):
            return  # (this response's task opens it when it wakes)
        try:
            await self._open(scope, send, body_send)
        except Exception as exc:
            self._open_failed = exc

    async def _write(self, send: Send) -> None:
        stream = self.stream
        outbox = stream.outbox
        loop = asyncio.get_running_loop()
        paced = False  # the last write came after a pause: text is arriving faster than the interval
        while True:
            if not paced:  # (paced, the next token is all but certain: pause at once, no wake-up for it)
                await outbox.wait()
            since = loop.time() - self._last_write  # since the last write of text (the first never waits)
            interval = stream.registry.write_interval
            paced = since < interval and not outbox.closed
            if paced:
                # Tokens are arriving faster than one write per interval: let a few more
                # gather so they share one socket write (real LM Studio speeds never wait here).
                # Nothing is taken before the wait: what arrives meanwhile joins the same events.
                # The stream's end cuts the pause short: its last text and terminal event go at once.
                await outbox.pause(interval - since)
                if outbox.empty and not outbox.closed:
                    paced = False  # the text slowed down: wait for it again
                    continue
            if not await self._write_ready(send):
                return

    async def _write_ready(self, send: Send) -> bool:
        """Write what is pending now, if anything; False once the body is complete (`[DONE]` sent).

        Also called once right after the response headers (`_open`, in the pump's step or in this
        response's task): what is ready then leaves with them, without waiting for the writer
        task's first turn of the event loop.
        """
        stream = self.stream
        outbox = stream.outbox
        batch = outbox.take_nowait()
        if not batch:
            if not outbox.closed:
                return True  # nothing yet
            await send({"type": "http.response.body", "body": sse.DONE, "more_body": False})
            return False
        now = asyncio.get_running_loop().time()
        stream.registry.metrics.relay.observe(time.perf_counter() - outbox.pending_since)
        if any(event["event"] in TEXT_EVENTS for event in batch):  # also behind `response.created`
            self._last_write = now
        stream.last_sent = now
        chunk = sse.frames(batch)
        if outbox.closed and outbox.empty:
            await send({"type": "http.response.body", "body": chunk + sse.DONE, "more_body": False})
            return False
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        return True


async def respond(
    receive: Receive, send: Send, write: Callable[[Send], Awaitable[None]], headers: list[tuple[bytes, bytes]] = HEADERS
) -> None:
    """Send an SSE response whose body `write` sends, until it ends or the client disconnects."""
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await stream_body(receive, send, write)


async def stream_body(receive: Receive, send: Send, write: Callable[[Send], Awaitable[None]]) -> None:
    """Run `write` (the body of a started response) until it ends or the client disconnects.

    A second task watches for the disconnect, so the body stops at once when the client goes,
    not at its next write; the caller's `finally` then stops what produced the events.
    """
    writer = asyncio.ensure_future(write(send))
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({writer, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writer, watcher):
            task.cancel()
        await asyncio.gather(writer, watcher, return_exceptions=True)
    failure = None if writer.cancelled() else writer.exception()
    if failure is not None and not isinstance(failure, OSError):  # OSError: the client is gone
        raise failure


def _never_waits(send: Send) -> bool:
    """Whether a write through the server's `send` completes now, without waiting: uvicorn's waits
    only while its transport holds more than it takes (a client that reads slowly). Only uvicorn's
    is known; with another server the response's own task does every write."""
    flow = getattr(getattr(send, "__self__", None), "flow", None)
    return flow is not None and flow.write_paused is False


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
