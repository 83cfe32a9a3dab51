"""uvicorn on a socket bound in advance, in the foreground or in a thread with its own event loop.

Shared by the simulator and `BackgroundServer`: binding first gives the port (port 0 picks a
free one) before anything is served, and the thread reports when uvicorn is really listening.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterable

import uvicorn

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
