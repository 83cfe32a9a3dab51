"""Request decoding made faster gives the same results: the validator called directly, `content` left_to_right."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import Field

from proxy.errors import InvalidRequest, ValidationError
from proxy.wire import decode
from proxy.wire.decode import decode_body
from proxy.wire.requests import Content, CreateResponseRequest, InputMessage, ThreadCreate

BLANKS = st.text(" \t\n\r\x0b\x0c", max_size=3).map(str.encode)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-3, 3), st.text(max_size=8))
MESSAGES = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "assistant", "system", "tool", "bogus"]),
        "content": st.one_of(st.text(max_size=20), st.lists(st.text(max_size=5), max_size=2), SCALARS),
    },
)
BODIES = st.fixed_dictionaries(
    {"inputs": st.lists(MESSAGES, max_size=3)},
    optional={
        "model": SCALARS,
        "stream": SCALARS,
        "temperature": SCALARS,
        "maxTokens": SCALARS,
        "max_tokens": SCALARS,
        "thread_id": SCALARS,
        "metadata": st.dictionaries(st.text(max_size=4), SCALARS, max_size=3),
        "unknown": SCALARS,
        "nan": st.sampled_from([float("nan"), float("inf"), 1.0]),
    },
)


def _reference(model: type[pydantic.BaseModel], body: bytes, empty_is_object: bool) -> Any:
    """decode_body as it was: `strip()` for the blank check, then `model_validate_json`."""
    if not body.strip():
        if not empty_is_object:
            raise InvalidRequest("The request body must be a JSON object.")
        body = b"{}"
    try:
        decoded = model.model_validate_json(body)
    except pydantic.ValidationError as exc:
        raise decode._invalid(exc, "request") from None
    if (b"N" in body and b"NaN" in body) or (b"I" in body and b"Infinity" in body):
        decode._refuse_non_finite(decoded)
    return decoded


def _outcome(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        result = call(*args, **kwargs)
    except (InvalidRequest, ValidationError) as exc:
        return (type(exc), str(exc), exc.details)
    dump = result.model_dump()
    return (type(result), json.dumps(dump, sort_keys=True, default=repr), result.model_fields_set)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(prefix=BLANKS, body=st.one_of(BODIES.map(json.dumps).map(str.encode), st.binary(max_size=40)))
@example(prefix=b"", body=b"")
@example(prefix=b" \n", body=b"")
@example(prefix=b"\t", body=b'{"inputs": [{"content": "hi"}]}')
@example(prefix=b"", body=b"\x85")  # not ASCII whitespace: strip() keeps it
def test_decode_body_matches_model_validate_json(prefix: bytes, body: bytes) -> None:
    whole = prefix + body
    for model in (CreateResponseRequest, ThreadCreate):
        for empty_is_object in (False, True):
            ours = _outcome(decode_body, model, whole, empty_is_object=empty_is_object)
            assert ours == _outcome(_reference, model, whole, empty_is_object)


@pytest.mark.parametrize("body", [b"", b" ", b"\n\t", b"\r\n \x0b\x0c"])
def test_a_blank_body_is_not_an_object(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="must be a JSON object"):
        decode_body(CreateResponseRequest, body)
    assert decode_body(ThreadCreate, body, empty_is_object=True).model_fields_set == set()


def test_leading_whitespace_before_the_object_is_fine() -> None:
    req = decode_body(CreateResponseRequest, b' \n {"inputs": [{"content": "hi"}]}')
    assert req.inputs[0].content == "hi"


class SmartUnion(InputMessage):
    """InputMessage with pydantic's default (smart) union for `content`, as it was."""

    content: Content | None = Field(None)


JSON = st.recursive(
    SCALARS | st.sampled_from(["text", "input_text", "image", "file"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["type", "text", "x"]), inner),
    max_leaves=6,
)


def _message(model: type[InputMessage], body: bytes) -> Any:
    try:
        return ("ok", model.model_validate_json(body).model_dump())
    except pydantic.ValidationError as exc:
        return ("invalid", exc.errors(include_url=False))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(JSON)
@example([{"type": "text"}])
@example(["a", {"text": 3}])
def test_content_left_to_right_is_smart_mode(content: Any) -> None:
    body = json.dumps({"role": "user", "content": content}).encode()
    assert _message(InputMessage, body) == _message(SmartUnion, body)
