"""Run the proxy (and optionally the simulator) in a background thread: for notebooks, scripts and tests.

Unless a `database` is given, the proxy keeps its threads in a temporary SQLite file, deleted
on `stop()`: a notebook or a script never writes into the user's data directory, which a
running `lmstudio-proxy serve` uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from proxy.app import create_app, stop_streams, uvicorn_config
from proxy.config import Config
from proxy.engines import is_url
from proxy.serving import ThreadedServer, bind
from proxy.state import Proxy


class BackgroundServer:
    """The proxy on a real port, served by uvicorn on its own event loop in a daemon thread.

    With `simulate=True` it also starts the LM Studio simulator (on a free port) and
    points the proxy at it; `simulate=N` starts N of them, as N LM Studio hosts (`simulators`);
    `simulator_options` go to `proxy.simulator.Simulator`. `lmstudio_host` is one HOST:PORT or
    several.
    `database` is the SQLite file to use; without one (and without `database.path` in
    `config`) it is a temporary file, deleted by `stop()`. `database_path` says which.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        simulate: bool | int = False,
        lmstudio_host: str | Sequence[str] | None = None,
        database: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        simulator_options: dict[str, Any] | None = None,
        socket_options: list[tuple[int, int, int]] | None = None,
    ) -> None:
        self.config = config or Config()
        self._socket_options = socket_options or []  # set on the listening socket; accepted ones inherit
        self.simulator: Any = None  # the first simulator
        self.simulators: list[Any] = []
        if simulate:
            from proxy.simulator import Simulator

            self.simulators = [Simulator(**(simulator_options or {})) for _ in range(int(simulate))]
            self.simulator = self.simulators[0]
        self._lmstudio_host = lmstudio_host
        self._database = database
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self.database_path: Path | None = None  # the SQLite file in use, once started (None: PostgreSQL)
        self._host = host
        self._port = port
        self._threaded: ThreadedServer | None = None
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
        for simulator in self.simulators:
            simulator.start()
        if self.simulators and not host:
            host = [simulator.host_port for simulator in self.simulators]
        database = self._database or self.config.database.path or None
        if database is None:
            # ignore_cleanup_errors: on Windows a file the server still holds cannot be removed.
            self._temporary = tempfile.TemporaryDirectory(prefix="lmstudio-proxy-", ignore_cleanup_errors=True)
            database = Path(self._temporary.name) / "proxy.sqlite3"
        self.database_path = None if is_url(str(database)) else Path(database)
        self.app = create_app(self.config, lmstudio_host=host, database=database)
        sock = bind(self._host, self._port, self._socket_options)
        self.port = sock.getsockname()[1]
        config = uvicorn_config(self.app, self.config, graceful_shutdown_seconds=10)
        app = self.app
        self._threaded = ThreadedServer(config, sock, name="lmstudio-proxy", before_shutdown=lambda: stop_streams(app))
        self._threaded.start("the proxy")
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
        if self._threaded is not None:
            self._threaded.stop()  # as on SIGTERM, the streams end first (`app.stop_streams`)
            self._threaded = None
        for simulator in self.simulators:
            simulator.stop()
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def serve_in_background(
    *,
    simulate: bool | int = False,
    config: Config | None = None,
    lmstudio_host: str | Sequence[str] | None = None,
    database: str | Path | None = None,
    port: int = 0,
    simulator_options: dict[str, Any] | None = None,
) -> Iterator[str]:
    """`with serve_in_background(simulate=True) as base_url:` — the proxy on a free port until the block ends.

    Threads are kept in a temporary database, deleted when the block ends, unless `database`
    (or `database.path` in `config`) names one.
    """
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
