"""The app factory: builds the store, LM Studio hosts and stream registry, and owns their lifetimes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy import api_assistants, api_files, api_meta, api_responses, api_threads, engines, metrics, openapi, playground
from proxy.auth import Authenticator
from proxy.backends import Backends
from proxy.config import Config
from proxy.errors import (
    ConfigError,
    InternalError,
    MethodNotAllowed,
    MisdirectedRequest,
    PayloadTooLarge,
    ProxyError,
    RequestTimeout,
    ResourceNotFound,
    StorageUnavailable,
)
from proxy.files import FileStore, files_directory
from proxy.hosts import HostGuard
from proxy.models import ModelCatalog
from proxy.registry import StreamRegistry
from proxy.relay import RAW_SEND
from proxy.replicas import ReplicaRegistry
from proxy.serving import ConnectionLimits, default_max_connections, guarded_protocol
from proxy.state import Proxy, default_database_path
from proxy.store import WAL_RESTART_BYTES, Store, now_iso
from proxy.wire.bodies import ErrorEnvelope

log = logging.getLogger("proxy.app")
access_log = logging.getLogger("proxy.access")

WAL_CHECKPOINT_SECONDS = 1.0


def error_body(exc: ProxyError, trace_id: str) -> ErrorEnvelope:
    return {
        "success": False,
        "error": {
            "code": exc.code,
            "message": exc.message,
            "system_message": exc.message,
            "type": exc.type,
            "status": exc.status,
            "details": exc.details,
            "trace_id": trace_id,
            "timestamp": now_iso()[:19] + "Z",
        },
    }


def error_response(exc: ProxyError, trace_id: str) -> JSONResponse:
    # The RequestContext middleware adds X-Request-Id to every response, this one included.
    return JSONResponse(error_body(exc, trace_id), status_code=exc.status)


class RequestContext:
    """Pure ASGI middleware: the Host guard, a request id on every response, a body-size limit,
    one access log line.

    It also renders unexpected exceptions as the 500 envelope: Starlette's own
    ServerErrorMiddleware would send a bare text page.
    """

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, requests_counter: Counter, paths: dict[Any, str], hosts: HostGuard
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.max_body_bytes = max_body_bytes
        self.requests = requests_counter  # Counter labelled (method, endpoint, status)
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = "req_" + secrets.token_hex(8)
        started = time.perf_counter()
        scope.setdefault("state", {}).update(trace_id=trace_id, started=started)
        status = 0
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", trace_id.encode())]
            await send(message)

        limit = self.max_body_bytes
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        try:
            if not self.hosts.allows(headers.get(b"host")):  # before anything else, auth included
                raise MisdirectedRequest(
                    "This proxy does not serve the host named in the Host header. If you reach it by this "
                    "name on purpose, add the name to server.allowed_hosts."
                )
            if length is not None and length.isdigit() and int(length) > limit:
                raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
            received = 0

            async def limited_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise PayloadTooLarge(f"The request body is larger than the limit of {limit} bytes.")
                return message

            await self.app(scope, limited_receive, send_with_id)
        except ClientDisconnect:  # the client left mid-request: nobody to answer, nothing to fix
            access_log.info("client left during request %s", trace_id)
            status = status or 499
        except Exception as exc:
            if response_started:
                log.exception("request %s failed after its response started", trace_id)
                raise
            if not isinstance(exc, ProxyError):
                log.exception("unexpected error in request %s", trace_id)
                exc = InternalError("An unexpected error occurred. The request id is in trace_id.")
            await error_response(exc, trace_id)(scope, receive, send_with_id)
        finally:
            endpoint = self.paths.get(scope.get("endpoint"), "unmatched")
            self.requests.labels(scope["method"], endpoint, str(status)).inc()
            access_log.info(
                "%s %s %d %.1fms %s",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - started) * 1000,
                trace_id,
            )


async def _proxy_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProxyError)
    return error_response(exc, request.state.trace_id)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    err: ProxyError
    if exc.status_code == 404:
        err = ResourceNotFound(f"No such endpoint: {request.method} {request.url.path}")
    elif exc.status_code == 405:
        err = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}")
    else:
        err = ProxyError(str(exc.detail))
        err.status, err.code = exc.status_code, "HTTP_ERROR"  # type: ignore[misc]
    return error_response(err, request.state.trace_id)


async def stop_streams(app: Starlette) -> None:
    """End every stream *before* the server waits for connections to close (SIGTERM, stop()).

    uvicorn runs the lifespan's shutdown only after the open responses have finished, and an
    SSE response never finishes by itself; so the server calls this first
    (`serving.ProxyServer`): LM Studio gets its cancel, partial text is saved, and each client
    gets `response.error` SERVER_SHUTTING_DOWN + [DONE].
    """
    registry = proxy_of_app(app).registry
    log.info("shutting down: stopping %d stream(s)", len(registry.streams))
    await registry.shutdown()


def proxy_of_app(app: Starlette) -> Proxy:
    proxy: Proxy = app.state.proxy
    return proxy


async def checkpoint_round(store: Store) -> None:
    """Checkpoint the WAL in a worker thread; past WAL_RESTART_BYTES (commits that never pause
    kept it from starting over), finish on the event loop (`Store.restart_wal`)."""
    if await asyncio.to_thread(store.checkpoint_wal) >= WAL_RESTART_BYTES:
        store.restart_wal()


async def _checkpoint_wal(store: Store, checkpoints: bool) -> None:
    """About once a second: look after the storage (`Store.maintain`), then checkpoint the WAL in a
    worker thread if something was written (and the database has a WAL: `checkpoints`)."""
    seen = store.total_changes
    while True:
        await asyncio.sleep(WAL_CHECKPOINT_SECONDS)
        try:
            store.maintain()
        except Exception:  # a bug; the store's own faults are handled inside it
            log.exception("looking after the database failed")
        if checkpoints and store.total_changes != seen:
            seen = store.total_changes
            try:
                await checkpoint_round(store)
            except StorageUnavailable as exc:  # the next round tries again; SQLite's data is safe in the WAL
                log.warning("WAL checkpoint failed: %s", exc.message)


class ProxyApp(Starlette):
    """Starlette, with the server's own `send` kept in the scope for SSE bodies (`relay.RAW_SEND`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[RAW_SEND] = send
        await super().__call__(scope, receive, send)


def uvicorn_config(app: Starlette, config: Config, graceful_shutdown_seconds: int) -> uvicorn.Config:
    """How the proxy is served, in the foreground (`serve`) and in a thread (`BackgroundServer`)."""
    server = config.server
    for key in ("header_timeout_seconds", "body_timeout_seconds"):
        if getattr(server, key) <= 0:
            raise ConfigError(f"{config.source or '<config>'}: key 'server.{key}' must be a number > 0")
    if server.max_connections < 0:
        raise ConfigError(f"{config.source or '<config>'}: key 'server.max_connections' must be an integer >= 0")

    def timeout_response() -> bytes:
        trace_id = "req_" + secrets.token_hex(8)
        late = RequestTimeout(f"The request body did not arrive within {server.body_timeout_seconds:g} s.")
        body = json.dumps(error_body(late, trace_id)).encode()
        head = (
            f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"connection: close\r\nx-request-id: {trace_id}\r\n\r\n"
        )
        return head.encode() + body

    limits = ConnectionLimits(
        header_timeout=server.header_timeout_seconds,
        body_timeout=server.body_timeout_seconds,
        max_connections=server.max_connections or default_max_connections(),
        timeout_response=timeout_response,
    )
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=graceful_shutdown_seconds,
        # Longer than clients keep pooled connections (httpx: 5 s, uvicorn's own default), so
        # a client never sends a request on a connection the proxy is just closing.
        timeout_keep_alive=server.keep_alive_seconds,
    )


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of the app's routes (which depend on no config or database)."""
    app = create_app(Config(), database=":memory:")
    try:
        return openapi.document(app.routes)
    finally:
        proxy_of_app(app).store.close()


def create_app(
    config: Config,
    *,
    lmstudio_host: str | Sequence[str] | None = None,
    database: str | Path | None = None,
    extra_routes: list[Any] | None = None,
) -> Starlette:
    """Build the app; nothing connects until the lifespan starts (LM Studio lazily, on first use).

    `lmstudio_host`: one HOST:PORT or several (overriding `lmstudio.host` / `lmstudio.hosts`).
    """
    db_path = database or config.database.path or default_database_path()
    hosts = [lmstudio_host] if isinstance(lmstudio_host, str) else lmstudio_host
    backends = Backends(config.lmstudio, hosts)  # before the store: a config error opens nothing
    store = Store(db_path, max_page_bytes=config.limits.max_page_bytes)
    app_metrics = metrics.Metrics()
    # PostgreSQL: this process is one replica of possibly several (proxy/replicas.py).
    replicated = store.dialect is engines.POSTGRES
    registry = (ReplicaRegistry if replicated else StreamRegistry)(config, store, backends, app_metrics)
    app_metrics.watch(
        lambda: len(registry.streams), lambda: backends.errors, lambda: backends.reconnects, backends.statuses
    )
    proxy = Proxy(
        config, store, backends, registry, ModelCatalog(backends, config), Authenticator(config.auth.api_keys),
        app_metrics,
    )  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loop = app.state.loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            if isinstance(registry, ReplicaRegistry):  # leases, not the servers lock: see proxy/replicas.py
                tasks.append(loop.create_task(registry.run(), name="replicas"))  # renews (or takes) the lease
                registry.register()
            elif store.open_for_serving():
                interrupted = store.recover_interrupted()
                if interrupted:
                    log.warning("marked %d response(s) interrupted by an earlier crash", interrupted)
            else:
                log.info("another lmstudio-proxy is serving %s: its running responses are left alone", store.path)
        except StorageUnavailable as exc:  # serve anyway: each request that needs the store gets the 503
            log.error("cannot recover interrupted responses: %s", exc.message)
        store.reserve_space(config.database.reserve_bytes)
        tasks.append(loop.create_task(_checkpoint_wal(store, store.checkpoint_in_background()), name="wal-checkpoints"))
        tasks.append(loop.create_task(backends.run(), name="lmstudio-retries"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await registry.shutdown()
            await backends.aclose()
            store.close()

    routes = [
        *api_responses.routes,
        *api_threads.routes,
        *api_files.routes,
        *api_assistants.routes,
        *api_meta.routes,
        *metrics.routes,
        *openapi.routes,
        *playground.routes,
        *(extra_routes or []),
    ]
    paths = {getattr(r, "endpoint", None): getattr(r, "path", "") for r in routes}
    middleware = [
        Middleware(
            RequestContext,
            max_body_bytes=config.limits.max_body_bytes,
            requests_counter=app_metrics.requests,
            paths=paths,
            hosts=HostGuard(config.server.allowed_hosts),
        )
    ]
    if config.cors.allow_origins:
        # Outermost, so that the errors RequestContext renders itself (413, 500) carry CORS headers too.
        middleware.insert(
            0,
            Middleware(
                CORSMiddleware,
                allow_origins=config.cors.allow_origins,
                # Every method a route serves (PUT: assistants and upload URLs), from the routes.
                allow_methods=sorted({m for r in routes for m in getattr(r, "methods", None) or ()} | {"OPTIONS"}),
                allow_headers=["*"],
                expose_headers=["X-Request-Id"],
            ),
        )
    app = ProxyApp(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={ProxyError: _proxy_error, HTTPException: _http_error},
    )
    app.state.proxy = proxy
    app.state.files = FileStore(store, config.files, files_directory(config.files.directory, db_path))
    return app
