"""A real MCP server for the tests: the `mcp` SDK's MCPServer over streamable HTTP, in uvicorn.

Its tools record their calls; `hold` blocks until the test opens its gate, so a test can act
while a tool runs (synchronised on `held`, never on time).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer


class McpTestServer:
    def __init__(self, port: int, name: str = "testtools") -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.held = threading.Event()  # `hold` has started
        self.gate = threading.Event()  # `hold` may finish
        self.finished: list[str] = []  # names of the calls that returned
        server = MCPServer(name)

        @server.tool()
        def add(a: int, b: int) -> int:
            """Add two whole numbers."""
            self.calls.append(("add", {"a": a, "b": b}))
            self.finished.append("add")
            return a + b

        @server.tool()
        def weather(city: str) -> str:
            """The weather in a city."""
            self.calls.append(("weather", {"city": city}))
            self.finished.append("weather")
            return f"sunny in {city}"

        @server.tool()
        def hold(note: str) -> str:
            """Waits until the test lets it finish."""
            self.calls.append(("hold", {"note": note}))
            self.held.set()
            self.gate.wait(60)
            self.finished.append("hold")
            return "held and released"

        @server.tool()
        def explode() -> str:
            """Always fails."""
            self.calls.append(("explode", {}))
            raise ValueError("the tool exploded")

        app = server.streamable_http_app()

        async def recording(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
            await app(scope, receive, send)

        config = uvicorn.Config(recording, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def start(self) -> McpTestServer:
        self._thread.start()
        for _ in range(2000):
            if self._server.started:
                return self
            if not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        raise RuntimeError("the MCP test server did not start")

    def stop(self) -> None:
        self.gate.set()
        self._server.should_exit = True
        self._thread.join(30)

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]
