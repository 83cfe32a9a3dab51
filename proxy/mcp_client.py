"""MCP servers a request names: list their tools, run the calls the model makes.

The only module that imports the `mcp` SDK (imported lazily: it is large, and only requests
with MCP tools need it). Design decisions:
- Tools are listed when the request is accepted, before anything is stored: an unreachable
  server or a name that clashes is an error the client gets at once, and nothing is lost.
- The calls of one response share one session per server, opened on the first call and
  closed when the response ends, all inside the stream's own task (the SDK's sessions are
  anyio task groups: they must be entered and left by the same task).
- A call never raises: a tool that fails, times out or whose server went away gives a
  result with `is_error`, which the model reads in its next round (it can say so or retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.errors import McpUnavailable, ValidationError

if TYPE_CHECKING:
    from mcp import Client

log = logging.getLogger("proxy.mcp")

MAX_RESULT_CHARS = 100_000  # a result goes into the model's context: bound it


@dataclass(frozen=True)
class McpServer:
    """One `{type: "mcp"}` entry of a request."""

    label: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    allowed: frozenset[str] | None = None  # None: every tool the server lists


@dataclass(frozen=True)
class McpTool:
    """A tool an MCP server offers, as the model sees it."""

    server: McpServer
    name: str
    description: str | None
    parameters: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        """`{name, description, parameters}`, as the bridge offers tools to LM Studio."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class ToolResult:
    text: str
    is_error: bool = False


def _import_sdk() -> None:
    """Import the `mcp` SDK, undoing what its `sse-starlette` dependency does on import: it
    replaces uvicorn's `Server.handle_exit` for the whole process (the proxy dropped
    sse-starlette for exactly that; its own shutdown path is `serving.NotifyingServer`)."""
    import uvicorn.server

    handle_exit = uvicorn.server.Server.handle_exit
    import mcp.client.streamable_http  # noqa: F401  (the import that patches)

    uvicorn.server.Server.handle_exit = handle_exit  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def _connect(server: McpServer, timeout: float) -> AsyncIterator[Client]:
    """A session with `server`. The HTTP client is ours to close: the SDK closes only the ones
    it makes itself, and it makes its own only when no headers are needed."""
    _import_sdk()
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    http = create_mcp_http_client(headers=server.headers, timeout=httpx2.Timeout(timeout, read=None))
    async with http, Client(streamable_http_client(server.url, http_client=http), cache=None) as client:
        yield client


def _why(exc: BaseException) -> str:
    """The innermost useful message of an SDK failure (anyio wraps them in exception groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "…"


async def discover(servers: Iterable[McpServer], timeout: float, taken: set[str]) -> dict[str, McpTool]:
    """Every allowed tool of every server, by name. `taken` holds the request's function tool
    names: a clash (with one of them, or between two servers) is a 422, as is an allowed tool a
    server does not have. A server that cannot be reached or listed is a 502."""
    found: dict[str, McpTool] = {}
    errors: list[dict[str, str]] = []
    for index, server in enumerate(servers):
        try:
            listed = await _list(server, timeout)
        except Exception as exc:
            raise McpUnavailable(
                f"The MCP server '{server.label}' ({server.url}) could not be reached or listed: {_why(exc)}",
                {"server_label": server.label, "field": f"tools[{index}].server_url"},
            ) from exc
        names = {tool.name for tool in listed}
        for missing in sorted((server.allowed or frozenset()) - names):
            errors.append({"field": f"tools[{index}].allowed_tools",
                           "message": f"the MCP server '{server.label}' has no tool '{missing}'"})  # fmt: skip
        for tool in listed:
            if server.allowed is not None and tool.name not in server.allowed:
                continue
            if tool.name in taken or tool.name in found:
                other = found[tool.name].server.label if tool.name in found else "a function tool"
                errors.append({"field": f"tools[{index}]",
                               "message": f"the tool name '{tool.name}' of MCP server '{server.label}' is also "
                                          f"offered by {other}; choose one with allowed_tools"})  # fmt: skip
                continue
            found[tool.name] = tool
    if errors:
        raise ValidationError(f"Invalid request: {errors[0]['field']}: {errors[0]['message']}", {"errors": errors})
    return found


async def _list(server: McpServer, timeout: float) -> list[McpTool]:
    tools: list[McpTool] = []
    async with asyncio.timeout(timeout):
        async with _connect(server, timeout) as client:
            cursor: str | None = None
            for _ in range(100):  # a server whose pages never end cannot hold a request forever
                page = await client.list_tools(cursor=cursor)
                for tool in page.tools:
                    schema = tool.input_schema if isinstance(tool.input_schema, dict) else {}
                    tools.append(McpTool(server, tool.name, tool.description, schema or {"type": "object"}))
                cursor = page.next_cursor
                if cursor is None:
                    break
    return tools


class Sessions:
    """The MCP sessions of one response: opened on first use, closed by `aclose` (same task)."""

    def __init__(self, connect_timeout: float) -> None:
        self._timeout = connect_timeout
        self._stack = contextlib.AsyncExitStack()
        self._open: dict[str, Client] = {}
        self.calls = 0

    async def call(self, tool: McpTool, arguments: dict[str, Any], timeout: float) -> ToolResult:
        """Run one call to its end or its timeout; never raises (but cancellation goes on)."""
        self.calls += 1
        server = tool.server
        try:
            client = self._open.get(server.label)
            if client is None:
                async with asyncio.timeout(self._timeout):
                    client = await self._stack.enter_async_context(_connect(server, self._timeout))
                self._open[server.label] = client
            async with asyncio.timeout(timeout):
                result = await client.call_tool(tool.name, arguments)
        except TimeoutError:
            log.warning("MCP tool %s on %s: no answer within %g s", tool.name, server.label, timeout)
            return ToolResult(f"The tool '{tool.name}' did not finish within {timeout:g} s.", is_error=True)
        except Exception as exc:
            log.warning("MCP tool %s on %s failed: %s", tool.name, server.label, _why(exc))
            self._open.pop(server.label, None)  # a broken session is opened again on the next call
            return ToolResult(f"The tool '{tool.name}' could not be run: {_why(exc)}", is_error=True)
        return ToolResult(_text(result), bool(result.is_error))

    async def aclose(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._stack.aclose()
        except Exception as exc:  # a server that went away: nothing left to close politely
            log.debug("closing MCP sessions: %s", _why(exc))


def _text(result: Any) -> str:
    """A call's result as the text the model reads: its text parts, else its structured content."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {getattr(block, 'mime_type', 'unknown type')}]")
        elif kind in ("resource_link", "resource"):
            resource = getattr(block, "resource", block)
            text = getattr(resource, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource: {getattr(resource, 'uri', '')}]")
    text = "\n".join(parts)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[truncated: the result had {len(text)} characters]"
    return text
