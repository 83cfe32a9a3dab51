"""The SSE response of one stream: writes its Outbox to the client; a client that leaves stops it.

A plain ASGI response, not a library's: it needs exactly three things — write batches as
they come (letting fast tokens gather for a moment, see `write_interval`), notice a client
that disconnects (then stop the stream: LM Studio gets its cancel), and end after `[DONE]`.
Shutdown needs nothing here: the server stops every stream first (`app.stop_streams`), and
each one ends itself with `SERVER_SHUTTING_DOWN` + `[DONE]`.
"""

from __future__ import annotations

import asyncio
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


class EventStream:
    """The `text/event-stream` response of one `ActiveStream`."""

    def __init__(self, stream: ActiveStream) -> None:
        self.stream = stream
        self._last_write = 0.0  # loop time of the last write of text

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = self.stream
        try:
            # As on a JSON answer, but up to the first token: the proxy's own share of its wait.
            overhead = stream.overhead_ms(scope["state"]["started"], stream.first_answer_at)
            headers = [*HEADERS, (_OVERHEAD_HEADER, overhead.encode())]
            await respond(receive, send, self._write, self._write_ready, headers, scope.get(RAW_SEND))
        finally:
            # Also when the client left before the body started, or sending failed.
            if not self.stream.finished.is_set():
                await asyncio.shield(self.stream.client_gone())

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

        Also called once right after the response headers, in the handler's own task: the first
        token, already waiting when the handler answers, then leaves without waiting for the
        writer task's first turn of the event loop.
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
    receive: Receive,
    send: Send,
    write: Callable[[Send], Awaitable[None]],
    first: Callable[[Send], Awaitable[bool]] | None = None,
    headers: list[tuple[bytes, bytes]] = HEADERS,
    body_send: Send | None = None,
) -> None:
    """Send an SSE response whose body `write` sends, until it ends or the client disconnects.

    `first`, if given, writes what is ready right after the headers (False: the body is complete).
    The headers go through `send`; the body through `body_send` if given (see RAW_SEND).
    A second task watches for the disconnect, so the body stops at once when the client goes,
    not at its next write; the caller's `finally` then stops what produced the events.
    """
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    send = body_send or send
    if first is not None:
        try:
            if not await first(send):
                return
        except OSError:  # the client is gone (as for the writer task below)
            return
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


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
