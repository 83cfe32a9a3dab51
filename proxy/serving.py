"""uvicorn on a socket bound in advance, in the foreground or in a thread with its own event loop.

Shared by the simulator and `BackgroundServer`: binding first gives the port (port 0 picks a
free one) before anything is served, and the thread reports when uvicorn is really listening.

`guarded_protocol` bounds what a client that sends nothing can hold (do not "fix" without
reading why): uvicorn starts no timer before a request's headers arrive, so ~1,000 sockets
that never send (or never finish) a request held every file descriptor under a common
`ulimit -n` of 1024, and accept() failed for everyone else. Each connection now has one timer
while it waits for its client (headers, then body) and none while the app answers, so SSE
streams and keep-alive are untouched (uvicorn's own keep-alive timer covers idle time
between requests). And at `max_connections`, a new connection makes room by closing the
one that has waited longest for its client: a real client, which sends its request at once,
is served while idle sockets are held open, without waiting for their timers.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def bind(host: str, port: int, options: Iterable[tuple[int, int, int]] = ()) -> socket.socket:
    """A listening TCP socket; `options` are set on it (accepted sockets inherit them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only for a TCP-protocol
    # listener; without it small frames wait ~40 ms for delayed ACKs (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        for level, option, value in options:
            sock.setsockopt(level, option, value)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def settle_process() -> None:
    """Once a server that owns its process listens (`serve`, each of `serve --workers`): what
    the process holds by then (imports, the app, the store: some 75,000 objects) lives as long
    as it does, so it leaves the garbage collector's scans (`gc.freeze`). A full collection
    scanned all of it with the event loop, and so every stream, stopped: 23-77 ms each, five in
    a bench run; now 2-11 ms (see README.md, Performance). Never for an embedded proxy
    (`BackgroundServer`, a notebook): that process and its objects are its user's.
    """
    gc.freeze()


class NotifyingServer(uvicorn.Server):
    """A uvicorn.Server that calls `on_started` once it is listening, and `before_shutdown`
    before it starts waiting for open connections to finish (the proxy ends its streams there).
    """

    def __init__(
        self,
        config: uvicorn.Config,
        on_started: Callable[[], None] | None = None,
        before_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_started = on_started
        self._before_shutdown = before_shutdown

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            await self._before_shutdown()
        await super().shutdown(sockets)


class ThreadedServer:
    """uvicorn serving `sock` in a daemon thread; `start()` returns once it listens."""

    def __init__(
        self,
        config: uvicorn.Config,
        sock: socket.socket,
        name: str,
        before_shutdown: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._sock = sock
        self._started = threading.Event()
        self.server = NotifyingServer(config, self._started.set, before_shutdown)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=[self._sock]))
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._failure = exc
        finally:
            self._started.set()

    def start(self, what: str) -> None:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT) or self._failure is not None or not self.server.started:
            failure = self._failure
            self.stop()
            raise RuntimeError(f"{what} failed to start") from failure

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self.server.started

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread.ident is not None:
            self._thread.join(STOP_TIMEOUT)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(STOP_TIMEOUT)
        self._sock.close()


@dataclass(frozen=True)
class ConnectionLimits:
    """What `guarded_protocol` bounds; `timeout_response` renders the whole 408 response."""

    header_timeout: float
    body_timeout: float
    max_connections: int
    timeout_response: Callable[[], bytes]


class _HeadersWithBody:
    """A transport that sends a response's headers in one write with the body that follows them.

    uvicorn writes the status line and headers on `http.response.start` and the body on the
    next message, two syscalls, two TCP segments and two wake-ups of the client, though the app
    sends both in the same step (a JSON answer; an SSE stream's first token). The headers are
    held instead until the next write or the end of this turn of the event loop, whichever
    comes first; bytes are never reordered, and closing writes what is held first.
    """

    __slots__ = ("_flush_handle", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self.drop()
        if held is not None:
            self._transport.writelines((held, data))  # one write, without copying the body
        elif data[:9] == b"HTTP/1.1 " and not self._transport.is_closing():  # a response's head
            self._held = bytes(data)
            self._flush_handle = self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self.drop()
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def drop(self) -> bytes | None:
        """Take what is held (the connection is gone: it goes nowhere)."""
        held, self._held = self._held, None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        return held

    def __getattr__(self, name: str) -> Any:  # everything else is the transport's
        return getattr(self._transport, name)


class _GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a timer while it waits for the client, and a connection cap."""

    limits: ClassVar[ConnectionLimits]
    # Slots, not three more keys in uvicorn's instance dict: those made it grow to the next size
    # (about 1.3 KB more per connection, measured with tracemalloc).
    __slots__ = ("_in_body", "_timer", "_waiting_since")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_since: float | None = None  # loop time since the client owes us something
        self._in_body = False

    def _arm(self, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(seconds, self._give_up)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _give_up(self) -> None:
        """The client took too long (or room is needed): 408 mid-body, else just close."""
        self._disarm()
        self._waiting_since = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._in_body and cycle is not None and not cycle.response_started:
            cycle.response_started = cycle.response_complete = True  # the app's own answer goes nowhere
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.write(self.limits.timeout_response())
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = typing.cast(asyncio.Transport, _HeadersWithBody(transport, self.loop))
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self.transport.close()
            return
        self._waiting_since = self.loop.time()
        self._arm(self.limits.header_timeout)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for its client; False if every one is busy."""
        waiting = [c for c in self.connections if isinstance(c, _GuardedProtocol) and c._waiting_since is not None]
        if not waiting:
            return False
        min(waiting, key=lambda c: c._waiting_since or 0.0)._give_up()
        return True

    def data_received(self, data: bytes) -> None:
        if self._timer is None and (self.cycle is None or self.cycle.response_complete):
            # The first bytes of a request on a kept-alive connection: its headers are due now.
            self._waiting_since = self.loop.time()
            self._arm(self.limits.header_timeout)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._arm(self.limits.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._waiting_since = None
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timer
        if not self.transport.is_closing():
            self._waiting_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if isinstance(self.transport, _HeadersWithBody):
            self.transport.drop()
        self._waiting_since = None
        super().connection_lost(exc)


def default_max_connections() -> int:
    """The open-file limit less 128 descriptors for everything else (the database, LM Studio, logs)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to run into
        return 10_000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, soft - 128)


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol with these bounds (see the module docstring); for `uvicorn.Config(http=...)`."""
    return type("GuardedProtocol", (_GuardedProtocol,), {"limits": limits})
