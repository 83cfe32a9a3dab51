"""Routes that declare their operation: what they take and answer, for the OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One operation of the HTTP API, as `proxy/openapi.py` documents it.

    `errors` lists the error statuses besides 500 (every operation) and 401 (every one that
    is not `public`). `response` is a shape from `proxy.wire.bodies`; None with a `media`
    other than JSON means a text body, with status 204 no body at all.
    """

    id: str
    summary: str
    tag: str
    response: Any = None
    response_description: str = "OK"
    status: int = 200
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    public: bool = False
    description: str | None = None
    media: str = "application/json"
    stream_description: str | None = None  # also answers text/event-stream (create with stream: true)
    headers: tuple[str, ...] = ()  # its answer's headers besides X-Request-Id (`proxy/openapi.py` HEADERS)


class OperationRoute(Route):
    """A Starlette route that carries its `Operation`."""

    def __init__(self, path: str, endpoint: Endpoint, method: str, operation: Operation) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.operation = operation
        self.method = method


class Endpoints:
    """Collects a module's routes: `@api.get("/path", Operation(...))` above each handler."""

    def __init__(self) -> None:
        self.routes: list[OperationRoute] = []

    def _add(self, method: str, path: str, operation: Operation) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            self.routes.append(OperationRoute(path, endpoint, method, operation))
            return endpoint

        return register

    def get(self, path: str, operation: Operation) -> Callable[[Endpoint], Endpoint]:
        return self._add("GET", path, operation)

    def post(self, path: str, operation: Operation) -> Callable[[Endpoint], Endpoint]:
        return self._add("POST", path, operation)

    def patch(self, path: str, operation: Operation) -> Callable[[Endpoint], Endpoint]:
        return self._add("PATCH", path, operation)

    def delete(self, path: str, operation: Operation) -> Callable[[Endpoint], Endpoint]:
        return self._add("DELETE", path, operation)
