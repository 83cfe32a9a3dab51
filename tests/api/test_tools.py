"""Function tools: the model calls, the client runs, the result goes back on the same thread."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aitronos.core.http_sse import EventSource
from support import KEY, Harness, make_config, v5

from proxy.history import NOT_EXECUTED

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def test_a_round_trip_through_the_v5_sdk(harness: Harness) -> None:
    client = v5(harness)
    first = client.responses.create_response(inputs=[{"role": "user", "content": "Call get_weather"}], tools=[WEATHER])
    assert first["status"] == "completed" and first["stop_reason"] == "tool_calls"
    [call] = first["tool_calls"]
    assert call["tool_name"] == "get_weather" and isinstance(call["tool_arguments"]["city"], str)
    assert first["output"][0]["type"] == "message"  # FR's output[] stays message-only
    record = harness.sim.predictions()[-1]
    assert record["tools"] == ["get_weather"]

    result = {"role": "tool", "tool_call_id": call["id"], "content": {"temperature": 21}}
    second = client.responses.create_response(inputs=[result], thread_id=first["thread_id"], tools=[WEATHER])
    assert second["status"] == "completed" and "tool_calls" not in second
    assert '{"temperature":21}' in second["response"]  # the simulator quotes what the tool returned
    history = harness.sim.predictions()[-1]["history"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[1]["tool_calls"][0]["id"] == call["id"] and history[2]["tool_results"] == ['{"temperature":21}']

    messages = client.messages.get_thread_messages(first["thread_id"]).data
    assert [m.role for m in messages] == ["user", "assistant", "tool", "assistant"]
    stored = [m.model_dump() for m in messages]
    assert stored[1]["tool_calls"] == [call] and stored[2]["tool_call_id"] == call["id"]
    assert stored[2]["content"] == '{"temperature":21}'  # object content is stored as JSON text


def test_a_tool_call_streams_as_a_block_through_the_v5_transport(harness: Harness) -> None:
    http = v5(harness)._client_wrapper.httpx_client
    body = {"inputs": [{"role": "user", "content": "Call get_weather"}], "tools": [WEATHER], "stream": True}
    with http.stream("v1/model/response", method="POST", json=body) as response:
        events = [json.loads(e.data) for e in EventSource(response).iter_sse() if e.data != "[DONE]"]
    blocks = [e["block"] for e in events if e["event"] == "response.block"]
    completed = events[-1]
    assert completed["event"] == "response.completed" and completed["stop_reason"] == "tool_calls"
    assert (
        blocks
        and blocks[0]["type"] == "tool_call"
        and completed["tool_calls"] == [{k: v for k, v in blocks[0].items() if k != "type"}]
    )


def test_freddy_still_parses_a_body_with_tool_calls(harness: Harness) -> None:
    freddy = pytest.importorskip("freddy")
    with freddy.FreddyClient(api_key=KEY, base_url=harness.url) as client:
        response = client.responses.create(
            model="simulated-llm", inputs=[{"role": "user", "content": "Call get_weather"}], tools=[WEATHER]
        )
    assert response.status == "completed" and response.output[0].content[0].text


def test_a_call_left_without_a_result_is_closed_for_lm_studio(harness: Harness) -> None:
    with harness.client() as client:
        first = client.post(
            "/v1/model/response", json={"inputs": [{"content": "Call get_weather"}], "tools": [WEATHER]}
        ).json()
        assert first["tool_calls"]
        again = {"thread_id": first["thread_id"], "inputs": [{"content": "Never mind [tool=none] [tokens=3]"}]}
        assert client.post("/v1/model/response", json=again).status_code == 200
    history = harness.sim.predictions()[-1]["history"]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "user"]
    assert history[2]["tool_results"] == [NOT_EXECUTED]


BAD_TOOLS: dict[str, tuple[list[dict[str, Any]] | None, list[dict[str, Any]], str]] = {
    "duplicate names": ([WEATHER, WEATHER], [{"content": "hi"}], "tools[1].name"),
    "name too long": ([{**WEATHER, "name": "x" * 65}], [{"content": "hi"}], "tools[0].name"),
    "name with spaces": ([{**WEATHER, "name": "get weather"}], [{"content": "hi"}], "tools[0].name"),
    "too many": ([{**WEATHER, "name": f"t{i}"} for i in range(129)], [{"content": "hi"}], "tools"),
    "parameters not an object": (
        [{**WEATHER, "parameters": {"type": "string"}}], [{"content": "hi"}], "tools[0].parameters"
    ),
    "personal connectors": ([{"type": "personalConnector"}], [{"content": "hi"}], "tools[0].type"),
    "result without its call id": (None, [{"role": "tool", "content": "42"}], "inputs[0].tool_call_id"),
    "a call id on a user message": (None, [{"content": "hi", "tool_call_id": "c1"}], "inputs[0].tool_call_id"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_TOOLS.values(), ids=BAD_TOOLS.keys())
def test_bad_tools_are_a_422_that_stores_nothing(
    harness: Harness, case: tuple[list[dict[str, Any]] | None, list[dict[str, Any]], str]
) -> None:
    tools, inputs, field = case
    body: dict[str, Any] = {"inputs": inputs, **({"tools": tools} if tools is not None else {})}
    with harness.client() as client:
        response = client.post("/v1/model/response", json=body)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["error"]["details"]["errors"]]
        assert client.get("/v1/threads").json()["data"] == []
    assert harness.sim.predictions() == []


def test_a_cancel_while_a_call_is_generated_keeps_no_call(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(cancel={"quick_edit_seconds": 0.0}))
    h.sim.set_faults(None, stall_in_tool_call=True)
    body = {"inputs": [{"content": "Call get_weather"}], "tools": [WEATHER], "stream": True}
    with h.client() as client, client.stream("POST", "/v1/model/response", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        thread_id = next(json.loads(line[6:])["thread_id"] for line in lines if line.startswith("data: {"))
        h.sim.wait_for(lambda records: bool(records) and records[-1]["status"] == "running")
        cancel = client.post(f"/v1/model/response/{thread_id}/cancel")
        assert cancel.status_code == 200 and cancel.json()["cancel_mode"] == "keep_partial"
        rest = "\n".join(lines)
    assert '"response.cancelled"' in rest and '"response.block"' not in rest
    [record] = h.sim.predictions()
    assert record["tokens_after_cancel"] == 0
    with h.client() as client:
        messages = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
    assert messages[-1]["metadata"]["cancelled"] is True and "tool_calls" not in messages[-1]
