"""Property tests (hypothesis, no server) for request decoding and the SSE encoder.

Decoders either return well-formed values or raise the proxy's own 4xx errors, never anything else;
the SSE encoder's frames parse back to exactly the events that were encoded.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from proxy import sse
from proxy.errors import InvalidRequest, ValidationError
from proxy.wire.decode import decode_create, decode_query
from proxy.wire.requests import CreateResponseRequest, PageQuery

ROLES = ("user", "assistant", "system")
OUTPUT_MODE_NAMES = ("text", "plain", "structured", "blocks")

# Deterministic in CI: a fixed derandomized run, no example database written into the checkout.
fuzz = settings(max_examples=200, deadline=None, derandomize=True, database=None)

# Text without lone surrogates, but with what breaks line-based formats: CR, LF, CRLF, NEL, U+2028.
TRICKY = st.sampled_from(["\n", "\r", "\r\n", "\n\n", "data: ", "[DONE]", "\x85", "\u2028", "\u2029", "é", "😀", '"'])
text = st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=20), st.lists(TRICKY).map("".join))
# JSON values proper: no NaN, no infinities (events never hold them; encoded, they would not be JSON).
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), text)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3), max_leaves=10
)
# Anything json.loads can produce: NaN and the infinities included.
loaded_values = st.recursive(
    st.one_of(scalars, st.floats()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def near(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly plausible values for a field, sometimes anything at all."""
    return st.one_of(valid, valid, st.none(), loaded_values)


block = st.one_of(
    text,
    st.fixed_dictionaries({"type": st.sampled_from(["text", "input_text", "image", None]), "text": near(text)}),
    loaded_values,
)
message = st.fixed_dictionaries(
    {},
    optional={
        "role": near(st.sampled_from([*ROLES, "tool", "USER", ""])),
        "content": near(st.one_of(text, st.lists(block, max_size=3))),
        "texts": near(st.lists(st.one_of(st.fixed_dictionaries({"text": near(text)}), loaded_values), max_size=3)),
    },
)
number = st.one_of(st.integers(-3, 3), st.floats(-3, 3), st.floats(), st.integers())
create_bodies = st.fixed_dictionaries(
    {},
    optional={
        "inputs": near(st.lists(message, max_size=4)),
        "thread_id": near(st.text(max_size=210)),
        "threadId": near(text),
        "model": near(text),
        "stream": near(st.booleans()),
        "instructions": near(text),
        "temperature": near(number),
        "top_p": near(number),
        "topP": near(number),
        "max_output_synapses": near(st.integers(-2, 1_000_002)),
        "maxTokens": near(st.integers()),
        "max_tokens": near(number),
        "output_mode": near(st.sampled_from([*OUTPUT_MODE_NAMES, "TEXT", ""])),
        "outputMode": near(st.sampled_from(OUTPUT_MODE_NAMES)),
        "organization_id": near(text),
        "organizationId": near(text),
        "assistant_id": near(text),
        "assistantId": near(text),
        "metadata": near(st.dictionaries(text, loaded_values, max_size=3)),
        "store": near(st.booleans()),
    },
)


def optional_str(value: object, max_len: int = 1_000_000) -> bool:
    return value is None or (isinstance(value, str) and len(value) <= max_len)


def in_range(value: object, low: float, high: float) -> bool:
    return value is None or (isinstance(value, float) and low <= value <= high)


def assert_well_formed(req: CreateResponseRequest) -> None:
    assert req.inputs, req
    assert all(m.role in ROLES and isinstance(m.text(), str) for m in req.inputs), req.inputs
    assert any(m.role == "user" for m in req.inputs), req.inputs
    assert optional_str(req.thread_id, 200) and optional_str(req.model, 500) and optional_str(req.instructions)
    assert optional_str(req.organization_id, 200) and optional_str(req.assistant_id, 200)
    assert in_range(req.temperature, 0, 2) and in_range(req.top_p, 0, 1)
    assert req.max_tokens is None or (type(req.max_tokens) is int and 1 <= req.max_tokens <= 1_000_000)
    assert req.output_mode is None or req.output_mode in OUTPUT_MODE_NAMES
    assert req.stream in (None, True, False) and req.store in (None, True, False)
    assert req.metadata is None or isinstance(req.metadata, dict)
    # What is accepted can be stored and read back: no NaN or Infinity anywhere in it.
    json.dumps(req.metadata, allow_nan=False)


@fuzz
@given(st.one_of(create_bodies, st.dictionaries(text, loaded_values)))
@example({"inputs": [{"content": "hi"}], "temperature": math.nan, "max_tokens": math.inf})
@example({"inputs": [{"texts": [{"text": "hi"}, 7]}]})
@example({"inputs": [{"role": ["user"], "content": [{"type": ["text"]}]}]})
@example({"inputs": [{"content": "hi"}], "metadata": {"a": [math.nan]}})
def test_decode_create_returns_a_valid_request_or_a_validation_error(body: dict[str, Any]) -> None:
    try:
        req = decode_create(json.dumps(body).encode())
    except ValidationError as exc:
        errors = exc.details["errors"]
        assert errors and all(set(e) == {"field", "message"} for e in errors), errors
        event("rejected")
        return
    event("accepted")
    assert_well_formed(req)


@fuzz
@given(st.one_of(st.binary(), json_values.map(lambda v: json.dumps(v).encode()), text.map(str.encode)))
@example(b"\xef\xbb\xbf{}")  # a UTF-8 byte order mark
@example(b'{"a": "\xed\xa0\x80"}')  # an encoded lone surrogate
@example(b'{"a": 1' + b"0" * 5000 + b"}")  # beyond Python's int-string conversion limit
def test_decode_create_takes_any_bytes_to_a_request_or_a_4xx(body: bytes) -> None:
    try:
        req = decode_create(body)
    except (InvalidRequest, ValidationError):
        return
    assert_well_formed(req)


def test_deep_nesting_is_refused_when_decoding() -> None:
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        decode_create(b'{"inputs": [{"content": "x"}], "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}")


query_items = st.lists(st.tuples(st.sampled_from(["limit", "order", "after", "before"]) | text, text | TRICKY))
limits = st.one_of(st.integers(-5, 150).map(str), st.sampled_from([" 7 ", "1_0", "١٢", "0x10", "1e2", "²"]))


@fuzz
@given(
    st.one_of(
        query_items.map(QueryParams),
        text.map(QueryParams),
        st.fixed_dictionaries({}, optional={"limit": limits, "order": st.sampled_from(["asc", "desc", "ASC", ""])}).map(
            QueryParams
        ),
    ),
    st.sampled_from(["asc", "desc"]),
    st.integers(1, 1000),
)
def test_decode_query_returns_valid_params_or_a_validation_error(
    query: QueryParams, order: str, max_limit: int
) -> None:
    try:
        page = decode_query(PageQuery, query)
    except ValidationError as exc:
        assert exc.details["errors"]
        return
    assert isinstance(page, PageQuery)
    assert type(page.limit) is int and 1 <= page.limit <= 100
    assert page.order in ("asc", "desc")
    assert all(cursor is None or (isinstance(cursor, str) and cursor) for cursor in (page.after, page.before))


events = st.lists(
    st.builds(
        lambda name, fields: {"event": name, **fields},
        st.sampled_from(["response.content_delta", "response.completed", "reasoning.content"]) | text,
        st.dictionaries(text, json_values, max_size=3),
    ),
    max_size=4,
)


@fuzz
@given(events)
def test_sse_frames_are_one_data_line_each_and_parse_back_to_the_events(evs: list[dict[str, Any]]) -> None:
    assert sse.parse(sse.frames(evs) + sse.DONE) == [*evs, "[DONE]"]
    assert sse.parse((sse.frames(evs) + sse.DONE).decode().replace("\n", "\r\n")) == [*evs, "[DONE]"]
    for ev in evs:
        wire = sse.frame(ev).decode()
        # SSE line ends are CR, LF and CRLF (WHATWG HTML, "Parsing an event stream").
        assert wire.startswith("data: ") and wire.endswith("\n\n"), wire
        assert "\n" not in wire[:-2] and "\r" not in wire[:-2], wire
    assert sse.frames(evs) == b"".join(sse.frame(ev) for ev in evs)


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"])
def test_sse_frames_survive_splitlines(char: str) -> None:
    wire = sse.frame({"event": "response.content_delta", "delta": f"a{char}b"}).decode()
    assert wire.splitlines() == [wire[:-2], ""]
