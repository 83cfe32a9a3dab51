"""The SSE wire format: the only module that knows how frames look on the wire.

Every frame is one `data:` line holding a JSON object whose `event` field names it (no
`event:` lines: the hosted API's browser code listens on `message`), and a stream ends
with `data: [DONE]`. JSON never contains a raw newline, so one line per frame is safe.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

DONE = b"data: [DONE]\n\n"

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def frame(event: dict[str, Any]) -> bytes:
    text = _dumps(event)
    if not text.isascii():
        # Valid in SSE, but line splitters such as httpx's `iter_lines` (used by the v5 SDK)
        # also break lines at these; JSON escapes keep every frame on one line for everyone.
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")
    return b"data: " + text.encode() + b"\n\n"


def frames(events: Iterable[dict[str, Any]]) -> bytes:
    """Several frames in one write (coalescing is what keeps per-token cost down)."""
    return b"".join(frame(e) for e in events)


def parse(body: bytes | str) -> list[dict[str, Any] | str]:
    """Decode a whole SSE body into its frames (JSON objects, or `[DONE]`); for tests and tools."""
    text = body.decode() if isinstance(body, bytes) else body
    out: list[dict[str, Any] | str] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if not data:
            continue
        payload = "\n".join(data)
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out
