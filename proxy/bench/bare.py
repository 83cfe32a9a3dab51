"""A bare relay: the proxy's server and SDK with none of its work, for the bench's TTFT phase.

The proxy's own server (uvicorn with `serving.guarded_protocol`: httptools, uvloop where
installed, a response's headers sent with its first body) and the same `lmstudio` SDK calls,
and nothing else: no validation, no store, no registry, no events but the text. Its TTFT
overhead is what any proxy built from these parts pays on this machine; the proxy's figure above
it is what the proxy's own work costs. Only for measuring: it answers `POST
/v1/model/response` (the last input's text, `model`, `max_tokens`) with `response.content_delta`
frames and `[DONE]`, and `GET /` with 200 (LM Studio is connected on the first POST: an
unreachable one is the bench's clients' error to report, not this process's).
Run as `python -m proxy.bench.bare PORT LMSTUDIO_HOST`.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import lmstudio
import uvicorn
from starlette.types import Receive, Scope, Send

from proxy.config import Config
from proxy.serving import ConnectionLimits, default_max_connections, guarded_protocol

_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8")]


class BareRelay:
    """The ASGI app: one SDK client (opened on the first request), a model handle per key."""

    def __init__(self, lmstudio_host: str) -> None:
        self.host = lmstudio_host
        self.client: lmstudio.AsyncClient | None = None
        self.models: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["method"] == "GET":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
        else:
            await self._relay(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _relay(self, receive: Receive, send: Send) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = json.loads(body)
        key = request["model"]
        model = self.models.get(key)
        if model is None:
            if self.client is None:
                self.client = lmstudio.AsyncClient(self.host)
                await self.client.__aenter__()
            model = self.models[key] = await self.client.llm.model(key)
        history: Any = {"messages": [{"role": "user", "content": request["inputs"][-1]["content"]}]}  # as the proxy's
        stream = await model.respond_stream(history, config={"maxTokens": request.get("max_tokens")})
        await stream.start()
        started = False
        try:
            async for fragment in stream:
                if not fragment.content:
                    continue
                delta = json.dumps({"event": "response.content_delta", "delta": fragment.content})
                if not started:  # as the proxy: the headers wait for the first token
                    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
                    started = True
                await send({"type": "http.response.body", "body": f"data: {delta}\n\n".encode(), "more_body": True})
        finally:
            await stream.aclose()
        if not started:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})


def main(argv: list[str]) -> None:
    port, host = int(argv[0]), argv[1]
    # The proxy's default bounds, as `app.uvicorn_config` sets them: that lives in the app layer,
    # which only the proxy's entry points import (tests/unit/test_imports.py).
    server = Config().server
    limits = ConnectionLimits(
        server.header_timeout_seconds, server.body_timeout_seconds, default_max_connections(), lambda: b""
    )
    uvicorn.run(BareRelay(host), host="127.0.0.1", port=port, log_level="warning", http=guarded_protocol(limits))


if __name__ == "__main__":
    main(sys.argv[1:])
