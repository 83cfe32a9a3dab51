"""The SSE wire format: the only module that knows how frames look on the wire.

Every frame is one `data:` line holding a JSON object whose `event` field names it (no
`event:` lines: the hosted API's browser code listens on `message`), and a stream ends
with `data: [DONE]`. JSON never contains a raw newline, so one line per frame is safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

DONE = b"data: [DONE]\n\n"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def frame(event: Mapping[str, Any]) -> bytes:
    text = _dumps(event)
    if not text.isascii():
        # Valid in SSE, but line splitters such as httpx's `iter_lines` (used by the v5 SDK)
        # also break lines at these; JSON escapes keep every frame on one line for everyone.
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")
    return b"data: " + text.encode() + b"\n\n"


def frames(events: Iterable[Mapping[str, Any]]) -> bytes:
    """Several frames in one write (coalescing is what keeps per-token cost down)."""
    return b"".join(frame(e) for e in events)


class EventReader:
    """An incremental SSE reader: feed it bytes as they arrive, get whole events back.

    Each event is the JSON object of its `data:` lines, or the string "[DONE]". Frames may be
    split anywhere across chunks, lines may end in CRLF, and comment lines (`: ping`) are
    skipped. Used by the tests, the bench, and anything else that reads the proxy's stream.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[dict[str, Any] | str]:
        self._buffer += chunk
        if b"\r" in self._buffer:
            if self._buffer.endswith(b"\r"):  # a CRLF split across chunks: wait for its LF
                return []
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        *blocks, self._buffer = self._buffer.split(b"\n\n")
        out: list[dict[str, Any] | str] = []
        for block in blocks:
            data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if data:
                payload = b"\n".join(data)
                out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
        return out


def parse(body: bytes | str) -> list[dict[str, Any] | str]:
    """Decode a whole SSE body into its events (JSON objects, or "[DONE]")."""
    reader = EventReader()
    events = reader.feed(body.encode() if isinstance(body, str) else body)
    return events + reader.feed(b"\n\n")
