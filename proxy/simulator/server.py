"""The simulator's Starlette app and the `Simulator` that runs it (in a thread, or in the foreground)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from proxy.serving import NotifyingServer, ThreadedServer, bind
from proxy.simulator.controls import Faults, Settings
from proxy.simulator.models import DEFAULT_MODELS, ModelSpec
from proxy.simulator.protocol import NAMESPACES
from proxy.simulator.session import Session
from proxy.simulator.state import SimState


def build_app(state: SimState) -> Starlette:
    """The ASGI app: the greeting, the five namespace websockets, and `/simulator/*` introspection."""

    def namespace_endpoint(namespace: str) -> Callable[[WebSocket], Any]:
        async def endpoint(websocket: WebSocket) -> None:
            await Session(websocket, namespace, state).serve()

        return endpoint

    async def greeting(request: Request) -> Response:
        if state.refusing():
            return JSONResponse({"lmstudio": False, "error": "connections refused (fault)"}, status_code=503)
        return JSONResponse({"lmstudio": True})

    async def predictions(request: Request) -> Response:
        if request.method == "DELETE":
            state.clear()
            return Response(status_code=204)
        return JSONResponse(state.predictions())

    async def models(request: Request) -> Response:
        return JSONResponse(state.models())

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await _json_object(request)
                model = _model_field(body.pop("model", None))
                state.set_faults(model, Faults.from_mapping(body))
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(state.all_faults())

    async def settings(request: Request) -> Response:
        if request.method == "POST":
            try:
                body = await _json_object(request)
                state.set_settings(_model_field(body.pop("model", None)), body)
            except (ValueError, TypeError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(state.all_settings())

    routes: list[Route | WebSocketRoute] = [
        Route("/lmstudio-greeting", greeting),
        Route("/simulator/predictions", predictions, methods=["GET", "DELETE"]),
        Route("/simulator/models", models),
        Route("/simulator/faults", faults, methods=["GET", "POST"]),
        Route("/simulator/settings", settings, methods=["GET", "POST"]),
    ]
    routes += [WebSocketRoute(f"/{ns}", namespace_endpoint(ns)) for ns in NAMESPACES]
    return Starlette(routes=routes)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


def _model_field(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("model must be a string or null")
    return value


class Simulator:
    """An LM Studio simulator on a real port; `start()` runs it in a background thread with its own loop."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Iterable[ModelSpec | str] | None = None,
        tokens_per_second: float = 50.0,
        load_seconds: float = 1.0,
        prompt_seconds: float = 0.05,
        faults: Mapping[str | None, Faults | Mapping[str, Any]] | None = None,
    ) -> None:
        specs = [m if isinstance(m, ModelSpec) else ModelSpec.parse(m) for m in (models or DEFAULT_MODELS)]
        parsed = {k: f if isinstance(f, Faults) else Faults.from_mapping(f) for k, f in (faults or {}).items()}
        settings = Settings(tokens_per_second, load_seconds, prompt_seconds)
        self._state = SimState(specs, settings, parsed)
        self.app = build_app(self._state)
        self._host = host
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._threaded: ThreadedServer | None = None

    # -- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("the simulator is not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def host_port(self) -> str:
        """`HOST:PORT`, as `lmstudio.AsyncClient` takes it."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host_port}"

    # -- lifecycle -------------------------------------------------------------------------------

    def _bind(self) -> socket.socket:
        return bind(self._host, self._requested_port)

    def _config(self, *, embedded: bool) -> uvicorn.Config:
        # sansio websockets: the legacy implementation emits DeprecationWarnings (errors under pytest).
        # Embedded, leave the host's logging alone (log_config=None): records propagate to its root.
        log_config = None if embedded else uvicorn.config.LOGGING_CONFIG
        return uvicorn.Config(
            self.app, log_level="warning", lifespan="off", ws="websockets-sansio", log_config=log_config
        )

    def start(self) -> Simulator:
        """Start serving in a background thread; return once it is listening."""
        if self._threaded is not None:
            raise RuntimeError("the simulator is already started")
        self._sock = self._bind()
        self._threaded = ThreadedServer(self._config(embedded=True), self._sock, name=f"lmstudio-simulator-{self.port}")
        self._threaded.start("the LM Studio simulator")
        return self

    @classmethod
    def start_many(cls, count: int, **options: Any) -> list[Simulator]:
        """`count` simulators, each on a free port (several LM Studio hosts); stop each when done."""
        started: list[Simulator] = []
        try:
            for _ in range(count):
                started.append(cls(**options).start())
        except BaseException:
            for simulator in started:
                simulator.stop()
            raise
        return started

    def stop(self) -> None:
        """Close every websocket and the listener; join the thread."""
        if self._threaded is not None:
            self._threaded.stop()
        self._threaded = None

    async def serve(self, on_ready: Callable[[], None] = lambda: None) -> None:
        """Serve in the current event loop until interrupted (the standalone `simulate` command)."""
        self._sock = self._bind()
        server = NotifyingServer(self._config(embedded=False), on_ready)
        try:
            await server.serve(sockets=[self._sock])
        finally:
            self._sock.close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- introspection and control (thread-safe) -------------------------------------------------

    def predictions(self) -> list[dict[str, Any]]:
        """One record per prediction (as `GET /simulator/predictions`)."""
        return self._state.predictions()

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10) -> list[dict[str, Any]]:
        """Block until `predicate(predictions)` holds (re-checked on each change); else TimeoutError."""
        return self._state.wait_for(predicate, timeout)

    def models(self) -> list[dict[str, Any]]:
        return self._state.models()

    def set_faults(self, model: str | None = None, **faults: Any) -> None:
        """Replace the faults of `model` (None: all models); no keywords clears them."""
        self._state.set_faults(model, Faults.from_mapping(faults))

    def set_settings(self, model: str | None = None, **settings: float) -> None:
        """Change tokens_per_second / load_seconds / prompt_seconds, globally or for one model."""
        self._state.set_settings(model, settings)

    async def wait_for_async(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 10
    ) -> list[dict[str, Any]]:
        """`wait_for` from a coroutine, without blocking its event loop (where an SDK client may live)."""
        return await asyncio.to_thread(self._state.wait_for, predicate, timeout)

    def clear(self) -> None:
        """Forget all prediction records."""
        self._state.clear()
