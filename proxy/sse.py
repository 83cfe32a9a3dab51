"""The SSE wire format: the only module that knows how frames look on the wire.

Every frame is one `data:` line holding a JSON object whose `event` field names it (no
`event:` lines: the hosted API's browser code listens on `message`), and a stream ends
with `data: [DONE]`. JSON never contains a raw newline, so one line per frame is safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

DONE = b"data: [DONE]\n\n"

_encode = msgspec.json.Encoder().encode  # ~6x json.dumps for an event (lmstudio brings msgspec)
_LINE_BREAKS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def frame(event: Mapping[str, Any]) -> bytes:
    data = _encode(event)
    if 0xE2 in data or 0xC2 in data:  # one-byte scans (memchr) before looking for the sequences
        # Valid in SSE, but line splitters such as httpx's `iter_lines` (used by the v5 SDK)
        # also break lines at U+2028, U+2029 and U+0085: JSON escapes keep a frame on one line.
        for raw, escaped in _LINE_BREAKS:
            data = data.replace(raw, escaped)
    return b"data: " + data + b"\n\n"


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
