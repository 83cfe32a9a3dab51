"""Tool rounds, piece by piece: the next round's history, results the model reads, what a round stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp_types import CallToolResult, ImageContent, TextContent

from proxy import history
from proxy.mcp_client import MAX_RESULT_CHARS, _text
from proxy.outcomes import Ended, record
from proxy.spec import StreamSpec
from proxy.store import Store, Usage
from proxy.wire.bodies import ToolCall
from proxy.wire.decode import decode_create
from proxy.wire.requests import CreateResponseRequest, request_errors

CALL: ToolCall = {"id": "c1", "tool_name": "add", "tool_arguments": {"a": 1}}


def test_the_next_round_carries_the_text_the_calls_and_a_result_for_each() -> None:
    before = [{"role": "user", "content": "hi"}]
    after = history.next_round(before, "Let me add.", [dict(CALL), {**CALL, "id": "c2"}], {"c1": "2"})
    assert after[:1] == before
    assert after[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me add."},
            {"type": "toolCallRequest", "toolCallRequest": {"type": "function", "id": "c1", "name": "add",
                                                            "arguments": {"a": 1}}},
            {"type": "toolCallRequest", "toolCallRequest": {"type": "function", "id": "c2", "name": "add",
                                                            "arguments": {"a": 1}}},
        ],
    }  # fmt: skip
    results = [m["content"][0] for m in after[2:]]
    assert [(r["toolCallId"], r["content"]) for r in results] == [("c1", "2"), ("c2", history.NOT_EXECUTED)]


def test_a_proxy_run_call_without_a_result_says_the_result_was_lost() -> None:
    req = CreateResponseRequest.model_validate({"inputs": [{"content": "and now?"}]})
    stored: list[history.Stored] = [
        ("user", "go", {}),
        ("assistant", "", {"tool_calls": [{**CALL, "server_label": "s"}, {**CALL, "id": "c2"}]}),
    ]
    messages = history.build(stored, req)
    results = [m["content"][0]["content"] for m in messages if m["role"] == "tool"]
    assert results == [history.RESULT_LOST, history.NOT_EXECUTED]


def test_a_result_is_its_text_else_its_structured_content_and_is_bounded() -> None:
    mixed = CallToolResult(content=[TextContent(text="one"), ImageContent(data="AA==", mime_type="image/png")])
    assert _text(mixed) == "one\n[image: image/png]"
    assert _text(CallToolResult(content=[], structured_content={"result": 5})) == '{"result": 5}'
    long = _text(CallToolResult(content=[TextContent(text="x" * (MAX_RESULT_CHARS + 10))]))
    assert len(long) < MAX_RESULT_CHARS + 100 and long.endswith(f"had {MAX_RESULT_CHARS + 10} characters]")


@pytest.mark.parametrize(
    ("tool", "field"),
    [
        ({"server_url": None}, "tools[0].server_url"),
        ({"server_url": "stdio://x"}, "tools[0].server_url"),
        ({"server_url": "file:///x"}, "tools[0].server_url"),
        ({"configuration_id": "cfg"}, "tools[0].configuration_id"),
    ],
)
def test_mcp_tool_errors_name_the_field(tool: dict[str, Any], field: str) -> None:
    body = {"inputs": [{"content": "hi"}],
            "tools": [{"type": "mcp", "server_label": "s", "server_url": "http://h/mcp", **tool}]}  # fmt: skip
    req = CreateResponseRequest.model_validate(body)
    assert field in [e["field"] for e in request_errors(req)]


def test_two_servers_with_one_label_are_refused() -> None:
    server = {"type": "mcp", "server_label": "s", "server_url": "http://h/mcp"}
    req = CreateResponseRequest.model_validate({"inputs": [{"content": "hi"}], "tools": [server, server]})
    assert [e["field"] for e in request_errors(req)] == ["tools[1].server_label"]


def test_a_bad_label_is_named_as_the_client_spelled_it() -> None:
    with pytest.raises(Exception) as caught:
        decode_create(
            b'{"inputs":[{"content":"hi"}],"tools":[{"type":"mcp","server_label":"a b","server_url":"http://h"}]}'
        )
    assert "tools[0].server_label" in str(getattr(caught.value, "details", caught.value))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "db.sqlite3")
    yield store
    store.close()


def test_a_round_is_stored_whole_and_the_next_one_gets_its_own_message(store: Store) -> None:
    thread_id, response_id, ids, _ = store.begin_response("o", "", "m", [("user", "go")], {})
    store.checkpoint(response_id, thread_id, "Let me", [dict(CALL)])
    store.end_round(response_id, thread_id, "Let me add.", {"model": "m", "tool_calls": [CALL]})
    store.add_tool_result(response_id, thread_id, "2", {"tool_call_id": "c1", "tool_name": "add", "is_error": False})
    store.checkpoint(response_id, thread_id, "It is", None)
    spec = StreamSpec(owner="o", thread_id=thread_id, response_id=response_id, message_ids=ids, thread_created=True,
                      model="m", messages=[], prediction_config={}, output_mode="text", trace_id="t")  # fmt: skip
    ended = Ended(spec, "It is 2.", "", None, None, 1.0, Usage(output_tokens=3), None)
    outcome, _, event = record(store, ended)
    assert outcome == "completed" and "tool_calls" not in event
    rows = store.list_messages(thread_id, limit=10, order="asc", after=None, before=None).rows
    assert [(m["role"], m["content"]) for m in rows] == [
        ("user", "go"), ("assistant", "Let me add."), ("tool", "2"), ("assistant", "It is 2."),
    ]  # fmt: skip
    assert rows[1]["metadata"]["tool_calls"] == [CALL] and "in_progress" not in rows[1]["metadata"]


def test_only_the_calls_the_proxy_did_not_answer_go_to_the_client(store: Store) -> None:
    thread_id, response_id, ids, _ = store.begin_response("o", "", "m", [("user", "go")], {})
    spec = StreamSpec(owner="o", thread_id=thread_id, response_id=response_id, message_ids=ids, thread_created=True,
                      model="m", messages=[], prediction_config={}, output_mode="text", trace_id="t")  # fmt: skip
    theirs: ToolCall = {**CALL, "id": "c2", "tool_name": "get_weather"}
    ended = Ended(spec, "", "", None, None, 1.0, Usage(), None, tool_calls=[CALL, theirs], answered=frozenset({"c1"}))
    _, final, event = record(store, ended)
    assert event["tool_calls"] == [theirs] and final.tool_calls == [theirs]  # type: ignore[typeddict-item]
