"""Errors: one base carrying HTTP status and error code, rendered by one handler.

ProxyError                      -- anything the proxy reports to a client
├── InvalidRequest (400)        -- body is not JSON / not an object
├── AuthenticationRequired (401)
├── InsufficientPermissions (403) -- another key's thread
├── ResourceNotFound (404)      -- unknown thread/message/model, no active stream
├── MethodNotAllowed (405)
├── MisdirectedRequest (421)    -- a Host header the proxy does not serve (DNS rebinding)
├── StreamAlreadyActive (409)
├── RequestTimeout (408)        -- the request body did not arrive in time
├── PayloadTooLarge (413)
├── ValidationError (422)       -- details.errors lists the fields
├── McpUnavailable (502)        -- an MCP server the request names cannot be reached or listed
├── BackendUnavailable (503)    -- LM Studio unreachable or failed
├── ShuttingDown (503)          -- the proxy is stopping
├── StorageUnavailable (503)    -- the database cannot be written (disk full, read-only, file gone)
└── InternalError (500)
ConfigError                     -- a bad config file or CLI value (not an HTTP error)
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

ErrorType = Literal["client_error", "authentication_error", "authorization_error", "server_error"]


class ConfigError(ValueError):
    """The config file or a command-line value is wrong; the message names the key."""


class ProxyError(Exception):
    """Anything the proxy reports to a client; the subclass decides the status and code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    type: ClassVar[ErrorType] = "server_error"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidRequest(ProxyError):
    """The body is not JSON, or not an object."""

    status, code, type = 400, "INVALID_REQUEST", "client_error"


class AuthenticationRequired(ProxyError):
    """A missing or unknown API key."""

    status, code, type = 401, "AUTHENTICATION_REQUIRED", "authentication_error"


class InsufficientPermissions(ProxyError):
    """The thread belongs to another key."""

    status, code, type = 403, "INSUFFICIENT_PERMISSIONS", "authorization_error"


class ResourceNotFound(ProxyError):
    """An unknown thread, message, model or cursor, or no active stream."""

    status, code, type = 404, "RESOURCE_NOT_FOUND", "client_error"


class MethodNotAllowed(ProxyError):
    """The path exists, but not with this method."""

    status, code, type = 405, "METHOD_NOT_ALLOWED", "client_error"


class MisdirectedRequest(ProxyError):
    """The Host header names a host this proxy does not serve (the DNS-rebinding guard)."""

    status, code, type = 421, "MISDIRECTED_REQUEST", "client_error"


class StreamAlreadyActive(ProxyError):
    """A response is streaming on this thread."""

    status, code, type = 409, "STREAM_ALREADY_ACTIVE", "client_error"


class RequestTimeout(ProxyError):
    status, code, type = 408, "REQUEST_TIMEOUT", "client_error"


class PayloadTooLarge(ProxyError):
    """The body is over the configured limit."""

    status, code, type = 413, "PAYLOAD_TOO_LARGE", "client_error"


class ValidationError(ProxyError):
    """Wrong or missing fields; details.errors lists them."""

    status, code, type = 422, "VALIDATION_ERROR", "client_error"


class McpUnavailable(ProxyError):
    """An MCP server the request names cannot be reached or listed (nothing was stored)."""

    status, code, type = 502, "MCP_SERVER_UNAVAILABLE", "server_error"


class BackendUnavailable(ProxyError):
    """LM Studio is unreachable or failed (the message says where the proxy looked and what to do)."""

    status, code, type = 503, "MODEL_BACKEND_UNAVAILABLE", "server_error"


class ShuttingDown(ProxyError):
    """The proxy is stopping."""

    status, code, type = 503, "SERVER_SHUTTING_DOWN", "server_error"


class StorageUnavailable(ProxyError):
    """Raised by the store: nothing was written, and nothing will be until the storage is fixed."""

    status, code, type = 503, "STORAGE_UNAVAILABLE", "server_error"


class InternalError(ProxyError):
    """Anything unexpected."""


def error_classes() -> list[type[ProxyError]]:
    """Every error the API can answer with (for the OpenAPI document), by status."""
    found: list[type[ProxyError]] = []
    todo: list[type[ProxyError]] = [ProxyError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls is not ProxyError:
            found.append(cls)
    return sorted(found, key=lambda c: (c.status, c.code))
