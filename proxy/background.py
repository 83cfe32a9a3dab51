"""Run the proxy (and optionally the simulator) in a background thread: for notebooks, scripts and tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import uvicorn

from proxy.app import Proxy, create_app
from proxy.config import Config

START_TIMEOUT = 15.0


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()

    def install_signal_handlers(self) -> None:  # the foreground program owns the signals
        pass


class BackgroundServer:
    """The proxy on a real port, served by uvicorn on its own event loop in a daemon thread.

    With `simulate=True` it also starts the LM Studio simulator (on a free port) and
    points the proxy at it; `simulator_options` go to `proxy.simulator.Simulator`.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        simulate: bool = False,
        lmstudio_host: str | None = None,
        database: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        simulator_options: dict[str, Any] | None = None,
        socket_options: list[tuple[int, int, int]] | None = None,
    ) -> None:
        self.config = config or Config()
        self._socket_options = socket_options or []  # set on the listening socket; accepted ones inherit
        self.simulator: Any = None
        if simulate:
            from proxy.simulator import Simulator

            self.simulator = Simulator(**(simulator_options or {}))
        self._lmstudio_host = lmstudio_host
        self._database = database
        self._host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self._failure: BaseException | None = None
        self.port = 0
        self.app: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def proxy(self) -> Proxy:
        proxy: Proxy = self.app.state.proxy
        return proxy

    def start(self) -> BackgroundServer:
        host = self._lmstudio_host
        if self.simulator is not None:
            self.simulator.start()
            host = host or self.simulator.host_port
        self.app = create_app(self.config, lmstudio_host=host, database=self._database)
        # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (no Nagle delays).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for level, option, value in self._socket_options:
            sock.setsockopt(level, option, value)
        sock.bind((self._host, self._port))
        self.port = sock.getsockname()[1]
        started = threading.Event()
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, timeout_graceful_shutdown=10)
        self._server = _Server(config, started.set)

        def main() -> None:
            try:
                asyncio.run(self._server.serve(sockets=[sock]))  # type: ignore[union-attr]
            except BaseException as exc:
                self._failure = exc
            finally:
                sock.close()
                started.set()

        self._thread = threading.Thread(target=main, name="lmstudio-proxy", daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT) or self._failure is not None or not self._server.started:
            self.stop()
            raise RuntimeError(f"the proxy did not start: {self._failure!r}")
        return self

    def run_in_loop(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the server's loop (e.g. to inspect the registry) and return its result."""
        loop = self._loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def _loop(self) -> asyncio.AbstractEventLoop:
        assert self.app is not None
        loop: asyncio.AbstractEventLoop = self.app.state.loop
        return loop

    def stop(self) -> None:
        if self._server is not None and self._server.started and self._thread is not None:
            # As on SIGTERM: end the streams first (uvicorn would wait for them to close).
            with contextlib.suppress(Exception):  # a loop already gone has no streams left to end
                self.run_in_loop(self.proxy.registry.shutdown())
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if self.simulator is not None:
            self.simulator.stop()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def serve_in_background(
    *,
    simulate: bool = False,
    config: Config | None = None,
    lmstudio_host: str | None = None,
    database: str | Path | None = None,
    port: int = 0,
    simulator_options: dict[str, Any] | None = None,
) -> Iterator[str]:
    """`with serve_in_background(simulate=True) as base_url:` — the proxy on a free port until the block ends."""
    server = BackgroundServer(
        config,
        simulate=simulate,
        lmstudio_host=lmstudio_host,
        database=database,
        port=port,
        simulator_options=simulator_options,
    )
    with server:
        yield server.base_url
