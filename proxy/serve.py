"""`lmstudio-proxy serve`: run the proxy under uvicorn, optionally with the embedded simulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import time
from errno import EADDRINUSE
from typing import TYPE_CHECKING, Any, TextIO

from proxy import config as config_module
from proxy import workers
from proxy.app import create_app, stop_streams, uvicorn_config
from proxy.backends import Backends
from proxy.config import Config
from proxy.doctor import host_list, simulator_count, unreachable
from proxy.errors import ConfigError, ProxyError, StorageUnavailable
from proxy.hosts import is_loopback
from proxy.models import ModelCatalog
from proxy.serving import NotifyingServer, bind, settle_process
from proxy.state import default_database_path

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

log = logging.getLogger("proxy.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file (default: $LMSTUDIO_PROXY_CONFIG)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument(
        "--lmstudio",
        metavar="HOST:PORT[,…]",
        type=host_list,
        help="LM Studio's API host, or several, comma-separated (default: lmstudio.hosts, else discover)",
    )
    parser.add_argument(
        "--simulate",
        metavar="N",
        nargs="?",
        const=1,
        type=simulator_count,
        help="start the built-in LM Studio simulator and use it; N simulators: N LM Studio hosts",
    )
    parser.add_argument(
        "--database", metavar="PATH|URL", help="SQLite file, or postgresql://… URL (default: database.path)"
    )
    parser.add_argument("--preload", metavar="MODEL", help="load MODEL (a key or an alias) in LM Studio before serving")
    parser.add_argument(
        "--allow-open", action="store_true", help="allow a non-loopback address with no auth.api_keys configured"
    )
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N", help="N processes on one port (needs a PostgreSQL database)"
    )
    # A worker of `--workers`: the socket its supervisor bound, and the pipe that ends with it (proxy/workers.py).
    parser.add_argument("--listen-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--alive-fd", type=int, help=argparse.SUPPRESS)


def effective_config(args: argparse.Namespace) -> Config:
    config = config_module.load(args.config)
    server = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.allow_open:
        server["allow_open"] = True
    if server:
        config = config.replace("server", **server)
    if not is_loopback(config.server.host) and not config.auth.api_keys and not config.server.allow_open:
        raise ConfigError(
            f"refusing to listen on {config.server.host} with no auth.api_keys configured: anyone on the network "
            "could use LM Studio and read every thread. Configure auth.api_keys, or pass --allow-open."
        )
    return config


class OneLinePerClosedChannel(logging.Filter):
    """Keeps one of the lmstudio SDK's warnings per channel about messages on a channel already closed.

    After a cancel that LM Studio does not confirm within `cancel.drain_timeout_seconds`, the
    proxy closes the prediction's channel, and the SDK then logged ~400 bytes at WARNING for
    every fragment still in flight: 100-850 KB in one two-minute load test. That flood filled
    the test harness's unread stdout pipe (64 KiB), and the proxy's whole event loop blocked in
    the middle of a log write: every stream went silent (the CI load test's ReadTimeout).
    """

    def __init__(self, remember: int = 1024) -> None:
        super().__init__()
        self._seen: dict[object, None] = {}  # insertion-ordered: the oldest are forgotten first
        self._remember = remember

    def filter(self, record: logging.LogRecord) -> bool:
        if "for already closed channel" not in str(record.msg):
            return True
        channel = getattr(record, "channel_id", None)
        if channel in self._seen:
            return False
        self._seen[channel] = None
        if len(self._seen) > self._remember:
            del self._seen[next(iter(self._seen))]
        return True


def setup_logging(level: str) -> None:
    """`level` is the proxy's own; libraries show only warnings unless it is debug.

    httpx and the lmstudio SDK (one logger per class, so no common parent) log every websocket
    they open at INFO: at the default level that buried the proxy's own lines.
    """
    own = logging.getLevelNamesMapping()[level.upper()]
    logging.basicConfig(
        level=own if own <= logging.DEBUG else max(own, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("proxy").setLevel(own)
    logging.getLogger("AsyncWebsocketHandler").addFilter(OneLinePerClosedChannel())  # the SDK's logger


class LoadProgress:
    """Shows LM Studio's load progress: a `\\r`-redrawn bar on a terminal, else a log line per quarter."""

    WIDTH = 30

    def __init__(self, model: str, stream: TextIO) -> None:
        self.model = model
        self.stream = stream
        self.tty = stream.isatty()
        self._next_step = 0.25
        self._drawn = False

    def __call__(self, fraction: float) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.tty:
            filled = round(fraction * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self.stream.write(f"\rloading {self.model} [{bar}] {fraction:4.0%}")
            self.stream.flush()
            self._drawn = True
        else:
            while fraction >= self._next_step and self._next_step < 1.0:
                log.info("loading model '%s': %d%%", self.model, round(self._next_step * 100))
                self._next_step += 0.25

    def finish(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


async def preload(config: Config, lmstudio_hosts: list[str] | None, model: str, stream: TextIO) -> str:
    """Load `model` (a key or an alias) in LM Studio, showing progress; return its key.

    With several hosts, on the host a request for it would go to (where it is loaded, else
    downloaded). Runs on its own short-lived Bridges (and event loop): the app's must live on
    uvicorn's loop. The model stays loaded in LM Studio after these close.
    """
    backends = Backends(config.lmstudio, lmstudio_hosts)
    progress = LoadProgress(model, stream)
    try:
        catalog = ModelCatalog(backends, config)
        key = await catalog.resolve(model)
        backend = backends.choose(key)
        if any(key in (m["identifier"], m["key"]) for m in backend.loaded):
            log.info("model '%s' is already loaded", key)
            return key
        where = f" on {backend.name}" if len(backends.hosts) > 1 else ""
        log.info("loading model '%s'%s", key, where)
        started = time.monotonic()
        try:
            await backend.bridge.load(key, progress)
        finally:
            progress.finish()
        log.info("loaded model '%s' in %.1f s", key, time.monotonic() - started)
        return key
    finally:
        await backends.aclose()


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def foreground_server(app: Starlette, server_config: uvicorn.Config) -> NotifyingServer:
    """The server `serve` runs: it owns its process, which it settles once it listens
    (`serving.settle_process`), and it ends the streams before it waits for connections."""
    return NotifyingServer(server_config, on_started=settle_process, before_shutdown=lambda: stop_streams(app))


def run(args: argparse.Namespace) -> int:
    # uvicorn re-raises a SIGTERM once its graceful shutdown is done; by then the streams have
    # been ended and saved, so the process exits 0 rather than dying of the signal (and a
    # SIGTERM before uvicorn has started is a clean exit too).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    config = effective_config(args)
    setup_logging(config.logging.level)
    refused = workers.refusal(args.workers, str(args.database or config.database.path))
    if refused is not None:
        print(f"lmstudio-proxy: {refused}", file=sys.stderr, flush=True)
        return 2
    if args.alive_fd is not None:
        workers.exit_with_supervisor(args.alive_fd)
    simulators: list[Any] = []
    lmstudio_host: list[str] | None = args.lmstudio
    if args.simulate:
        from proxy.simulator import Simulator

        simulators = Simulator.start_many(args.simulate, tokens_per_second=30.0)
        lmstudio_host = [simulator.host_port for simulator in simulators]
    try:
        if args.preload:
            try:
                asyncio.run(preload(config, lmstudio_host, args.preload, sys.stderr))
            except ProxyError as exc:
                print(f"lmstudio-proxy: cannot preload '{args.preload}': {exc.message}", file=sys.stderr, flush=True)
                return 1
        where = f"{config.server.host}:{config.server.port}"
        try:
            # Bound before the banner, so "listening on" is true and a taken port is one clear line.
            sock = (
                socket.socket(fileno=args.listen_fd) if args.listen_fd else bind(config.server.host, config.server.port)
            )
        except OSError as exc:
            taken = exc.errno == EADDRINUSE
            hint = " (is another lmstudio-proxy running? pick a free port with --port)" if taken else ""
            print(f"lmstudio-proxy: cannot listen on {where}: {exc.strerror}{hint}", file=sys.stderr, flush=True)
            return 1
        if args.workers > 1:
            with sock:
                return workers.supervise(sock, args.workers, workers.worker_arguments(args, lmstudio_host))
        try:
            app = create_app(config, lmstudio_host=lmstudio_host, database=args.database)
        except StorageUnavailable as exc:  # read-only, immutable, corrupt, not a database: one line
            sock.close()
            print(f"lmstudio-proxy: {exc.message}", file=sys.stderr, flush=True)
            return 1
        server_config = uvicorn_config(app, config, int(config.cancel.drain_timeout_seconds) + 2)
        proxy = app.state.proxy
        auth = f"{len(config.auth.api_keys)} key(s)" if config.auth.api_keys else "off (any non-empty key)"
        lm = proxy.backends.where() + (
            f" (built-in simulator{'s' if len(simulators) > 1 else ''})" if simulators else ""
        )
        # Say now, not at the first request, when LM Studio does not answer (about a second when
        # nothing listens); serve anyway: the bridge connects on each request until it answers.
        problem = None if simulators or args.preload else asyncio.run(unreachable(config.lmstudio, lmstudio_host))
        if problem is not None:
            lm += " (does not answer yet)"
        host, port = sock.getsockname()[:2]
        print(
            f"lmstudio-proxy listening on http://{host if ':' not in host else f'[{host}]'}:{port}\n"
            f"  LM Studio: {lm}\n"
            f"  database:  {proxy.store.path or default_database_path()}\n"
            f"  auth:      {auth}\n"
            f"  config:    {config.source or 'defaults'}",
            flush=True,
        )
        if problem is not None:
            print(
                f"lmstudio-proxy: warning: {problem.message} Requests that need a model get 503 until it does.\n"
                f"  fix: {problem.fix}",
                file=sys.stderr,
                flush=True,
            )
        server = foreground_server(app, server_config)
        with sock:
            server.run(sockets=[sock])
    finally:
        for simulator in simulators:
            simulator.stop()
    return 0
