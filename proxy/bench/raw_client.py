"""A minimal HTTP/1.1 client on one keep-alive connection: TTFT through the proxy without httpx.

httpx spends milliseconds of its own on each request (the bench measures how many on a static
endpoint); timing with this client shows what the proxy itself adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any, NamedTuple

from proxy.bench.errors import BenchError
from proxy.bench.settings import API_KEY
from proxy.wire.bodies import OVERHEAD_HEADER

_COMPLETED_START = b'data: {"event":"response.completed"'
_OVERHEAD = re.compile(rb"\r\n" + OVERHEAD_HEADER.encode() + rb": *([0-9.]+)\r\n", re.IGNORECASE)
_COMPLETED_TOKENS = re.compile(rb'"event":"response\.completed".*"output_tokens":(\d+)')


class FirstToken(NamedTuple):
    seconds: float  # from sending the request to the first content delta
    proxy_own_seconds: float | None  # the proxy's own part, from its X-Proxy-Overhead-Ms header (None: no header)


class RawClient:
    """GETs and streaming POSTs over one connection, timed with perf_counter()."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def get(self, path: str) -> float:
        """Seconds for a GET whose answer has a Content-Length (a small JSON endpoint)."""
        started = time.perf_counter()
        await self.request("GET", path)
        return time.perf_counter() - started

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        """Status and body of a request without a body whose answer has a Content-Length."""
        reader, writer = await self._connection()
        head_line = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nX-API-Key: {API_KEY}\r\n"
        writer.write((head_line + ("Content-Length: 0\r\n" if method == "POST" else "") + "\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:"))
        return int(lines[0].split(b" ")[1]), await reader.readexactly(length)

    async def ttft(self, body: dict[str, Any], *, own_header: bool = True) -> FirstToken:
        """The time to the first content delta, and the proxy's own part of it; reads the stream to its end.

        `own_header`: the answer must carry X-Proxy-Overhead-Ms (the proxy's does; the bare relay's not).
        """
        reader, writer = await self._connection()
        request = self._create_request(body)
        started = time.perf_counter()
        writer.write(request)
        buffer, first = b"", None
        while not (buffer.endswith(b"\r\n0\r\n\r\n") and b"data: [DONE]" in buffer):  # chunked body's end
            chunk = await reader.read(65536)
            if not chunk:
                raise BenchError("the proxy closed the connection")
            buffer += chunk
            if first is None and b"response.content_delta" in buffer:
                first = time.perf_counter()
        if first is None:
            raise BenchError(f"no content delta in the stream: {buffer[-300:]!r}")
        own = _OVERHEAD.search(buffer[: buffer.find(b"\r\n\r\n") + 2])
        if own is None and own_header:
            raise BenchError(f"no {OVERHEAD_HEADER} header: {buffer[:300]!r}")
        return FirstToken(first - started, None if own is None else float(own.group(1)) / 1000)

    async def stream(self, body: dict[str, Any]) -> int:
        """Read one SSE stream to its end without parsing the frames; its `response.completed` output_tokens."""
        reader, writer = await self._connection()
        writer.write(self._create_request(body))
        tail = b""
        while not (tail.endswith(b"\r\n0\r\n\r\n") and b"data: [DONE]" in tail):  # chunked body's end
            chunk = await reader.read(65536)
            if not chunk:
                raise BenchError("the proxy closed the connection")
            tail += chunk
            # Keep the terminal event whole (a long answer's is longer than any fixed tail).
            start = tail.rfind(_COMPLETED_START)
            tail = tail[start:] if start >= 0 else tail[-4096:]
        found = _COMPLETED_TOKENS.search(tail)
        if found is None:
            raise BenchError(f"the stream did not end with response.completed: {tail[-300:]!r}")
        return int(found.group(1))

    async def disconnect_after(self, body: dict[str, Any], deltas: int) -> float:
        """Start a stream, close the connection once `deltas` content deltas came: time.time() of the close."""
        reader, writer = await self._connection()
        writer.write(self._create_request(body))
        buffer = b""
        while buffer.count(b"response.content_delta") < deltas:
            chunk = await reader.read(65536)
            if not chunk:
                raise BenchError(f"the stream ended before {deltas} deltas: {buffer[-300:]!r}")
            buffer += chunk
        closed = time.time()
        await self.aclose()
        return closed

    def _create_request(self, body: dict[str, Any]) -> bytes:
        payload = json.dumps(body).encode()
        return (
            f"POST /v1/model/response HTTP/1.1\r\nHost: {self.host}\r\nX-API-Key: {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload

    async def aclose(self) -> None:
        """Close the connection (the next request opens a new one)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
