"""The SSE wire format: frames, [DONE], and the incremental reader, which round-trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proxy import sse

EVENTS: list[dict[str, Any]] = [
    {"event": "response.processing", "status": "processing", "thread_id": "thrd_1", "message": "Processing"},
    {"event": "response.content_delta", "delta": 'line one\nline two\r\n\ttab "quoted" \\ back'},
    {"event": "response.content_delta", "delta": "é ü 日本語 😀 \u2028 \u2029 \x85 end"},
    {"event": "response.content_delta", "delta": "data: not a frame\n\ndata: [DONE]\n\n"},
    {"event": "response.completed", "usage": {"input_tokens": 1, "output_tokens": 2}, "response": None},
]
BODY = sse.frames(EVENTS) + sse.DONE
EXPECTED: list[dict[str, Any] | str] = [*EVENTS, "[DONE]"]


def test_frame_is_one_data_line() -> None:
    event = {"event": "response.content_delta", "delta": "a\nb"}
    data = sse.frame(event)
    assert data.startswith(b"data: ") and data.endswith(b"\n\n")
    assert data.count(b"\n") == 2  # JSON escapes the newline inside: one line, then the blank line
    assert json.loads(data[len(b"data: ") : -2]) == event
    assert b"event:" not in data  # the `event` field names it; browsers listen on `message`
    assert sse.DONE == b"data: [DONE]\n\n"


def test_frames_is_the_frames_in_order() -> None:
    assert sse.frames(EVENTS) == b"".join(sse.frame(e) for e in EVENTS)
    assert sse.frames([]) == b""


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_unicode_line_separators_are_escaped(char: str) -> None:
    data = sse.frame({"event": "response.content_delta", "delta": f"a{char}b"})
    assert char.encode() not in data
    assert f"\\u{ord(char):04x}".encode() in data
    # One line before the blank line, also for splitters that break at these (httpx's iter_lines, splitlines).
    assert data.decode().splitlines() == [data.decode().rstrip("\n"), ""]
    assert sse.parse(data) == [{"event": "response.content_delta", "delta": f"a{char}b"}]


def test_other_non_ascii_text_is_sent_as_utf8() -> None:
    data = sse.frame({"delta": "é😀"})
    assert "é😀".encode() in data


def test_whole_body_round_trips() -> None:
    assert sse.parse(BODY) == EXPECTED
    assert sse.parse(BODY.decode()) == EXPECTED


def test_fed_byte_by_byte() -> None:
    reader = sse.EventReader()
    out: list[dict[str, Any] | str] = []
    for i in range(len(BODY)):
        out += reader.feed(BODY[i : i + 1])
    assert out == EXPECTED


def test_fed_byte_by_byte_with_crlf_line_ends() -> None:
    body = BODY.replace(b"\n", b"\r\n")
    reader = sse.EventReader()
    out: list[dict[str, Any] | str] = []
    for i in range(len(body)):
        out += reader.feed(body[i : i + 1])
    assert out == EXPECTED


def test_split_anywhere_in_two_chunks() -> None:
    body = sse.frames(EVENTS[:3]) + sse.DONE
    for cut in range(len(body) + 1):
        reader = sse.EventReader()
        assert reader.feed(body[:cut]) + reader.feed(body[cut:]) == [*EVENTS[:3], "[DONE]"], cut


def test_events_come_out_as_soon_as_their_frame_is_complete() -> None:
    reader = sse.EventReader()
    first = sse.frame(EVENTS[0])
    assert reader.feed(first[:-1]) == []
    assert reader.feed(first[-1:] + sse.frame(EVENTS[1])[:5]) == [EVENTS[0]]
    assert reader.feed(sse.frame(EVENTS[1])[5:]) == [EVENTS[1]]


def test_comments_and_other_fields_are_skipped() -> None:
    body = (
        b": ping\n\n"
        + b": a comment line\r\n"
        + sse.frame(EVENTS[0])
        + b"event: ignored\nid: 7\nretry: 10\n"
        + sse.frame(EVENTS[1])
        + b":\n\n"
        + sse.DONE
    )
    reader = sse.EventReader()
    out: list[dict[str, Any] | str] = []
    for i in range(len(body)):
        out += reader.feed(body[i : i + 1])
    assert out == [EVENTS[0], EVENTS[1], "[DONE]"]


def test_data_lines_of_one_event_are_joined() -> None:
    assert sse.parse(b'data: {"a":\ndata: 1}\n\n') == [{"a": 1}]
    assert sse.parse(b'data:{"no_space":true}\n\n') == [{"no_space": True}]


def test_parse_accepts_a_body_without_the_last_blank_line() -> None:
    assert sse.parse(b'data: {"a": 1}') == [{"a": 1}]
    assert sse.parse(b"") == []
