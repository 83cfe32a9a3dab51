"""MCP tools: the proxy lists a real MCP server's tools, runs the model's calls, and goes on."""

from __future__ import annotations

import json
import sqlite3
import threading
from typing import Any

import pytest
from aitronos.core.http_sse import EventSource
from mcp_server import McpTestServer
from support import (
    Harness,
    ProxyProcess,
    StreamReader,
    UrlClients,
    assert_consistent,
    events_named,
    make_config,
    v5,
    wait_until,
)

from proxy.history import RESULT_LOST

WEATHER_FUNCTION = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def mcp(server: McpTestServer, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "tests", "server_url": server.url, **extra}


def messages_of(h: Harness, thread_id: str) -> list[dict[str, Any]]:
    with h.client() as client:
        data: list[dict[str, Any]] = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
    return data


def test_two_mcp_rounds_through_the_v5_sdk(harness: Harness, mcp_server: McpTestServer) -> None:
    client = v5(harness)
    answer = client.responses.create_response(
        inputs=[{"role": "user", "content": "[tool=add>weather] add 2 and 3, then the weather in Paris"}],
        tools=[mcp(mcp_server)],
    )
    assert answer["status"] == "completed" and "tool_calls" not in answer
    assert mcp_server.names() == ["add", "weather"]
    assert "sunny in" in answer["response"]  # the model read the last result

    first, second, third = harness.sim.predictions()
    assert sorted(first["tools"]) == ["add", "explode", "hold", "weather"]
    assert [m["role"] for m in second["history"]] == ["user", "assistant", "tool"]
    assert second["history"][2]["tool_results"] == ["5"]
    assert [m["role"] for m in third["history"]] == ["user", "assistant", "tool", "assistant", "tool"]
    usage = answer["usage"]
    assert usage["output_tokens"] == sum(p["tokens_generated"] for p in (first, second, third))

    stored = messages_of(harness, answer["thread_id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    calls = [stored[1]["tool_calls"][0], stored[3]["tool_calls"][0]]
    assert [c["tool_name"] for c in calls] == ["add", "weather"]
    assert all(c["server_label"] == "tests" for c in calls)
    assert stored[2]["tool_call_id"] == calls[0]["id"] and stored[2]["content"] == "5"
    assert stored[4]["content"].startswith("sunny in")
    assert stored[5]["content"] == answer["response"]


def test_mcp_rounds_stream_calls_and_results_through_the_v5_transport(
    harness: Harness, mcp_server: McpTestServer
) -> None:
    http = v5(harness)._client_wrapper.httpx_client
    body = {"inputs": [{"role": "user", "content": "[tool=add>weather] 4 and 5"}], "tools": [mcp(mcp_server)],
            "stream": True}  # fmt: skip
    with http.stream("v1/model/response", method="POST", json=body) as response:
        events = [json.loads(e.data) for e in EventSource(response).iter_sse() if e.data != "[DONE]"]
    kinds = [(e["block"]["type"], e["block"]["tool_name"]) for e in events if e["event"] == "response.block"]
    assert kinds == [("tool_call", "add"), ("tool_result", "add"), ("tool_call", "weather"), ("tool_result", "weather")]
    results = [e["block"] for e in events if e["event"] == "response.block" and e["block"]["type"] == "tool_result"]
    assert results[0]["tool_result"] == "9" and results[0]["is_error"] is False
    assert results[0]["server_label"] == "tests"
    completed = events[-1]
    assert completed["event"] == "response.completed" and "tool_calls" not in completed
    assert completed["response"].startswith("I called")


def test_allowed_tools_headers_and_authorization_reach_the_server(harness: Harness, mcp_server: McpTestServer) -> None:
    tool = mcp(mcp_server, allowed_tools=["add"], headers={"X-Team": "blue", "X-Skip": None}, authorization="tok")
    with harness.client() as client:
        answer = client.post("/v1/model/response", json={"inputs": [{"content": "add 1 and 2"}], "tools": [tool]})
    assert answer.status_code == 200, answer.text
    assert harness.sim.predictions()[0]["tools"] == ["add"]
    assert mcp_server.names() == ["add"]
    assert all(h.get("x-team") == "blue" and h.get("authorization") == "Bearer tok" for h in mcp_server.headers)
    assert not any("x-skip" in h for h in mcp_server.headers)


@pytest.mark.parametrize(
    ("tool", "field", "status"),
    [
        ({"allowed_tools": ["nope"]}, "tools[0].allowed_tools", 422),
        ({"server_url": "stdio://my-server"}, "tools[0].server_url", 422),
        ({"server_url": "ftp://x"}, "tools[0].server_url", 422),
        ({"server_url": None, "configuration_id": "cfg_1"}, "tools[0].configuration_id", 422),
        ({"server_label": "bad label"}, "tools[0].server_label", 422),
    ],
)
def test_bad_mcp_tools_are_a_422_that_stores_nothing(
    harness: Harness, mcp_server: McpTestServer, tool: dict[str, Any], field: str, status: int
) -> None:
    with harness.client() as client:
        answer = client.post(
            "/v1/model/response", json={"inputs": [{"content": "hi"}], "tools": [mcp(mcp_server, **tool)]}
        )
        assert answer.status_code == status, answer.text
        assert field in [e["field"] for e in answer.json()["error"]["details"]["errors"]]
        assert client.get("/v1/threads").json()["data"] == []
    assert harness.sim.predictions() == []


def test_clashing_names_and_labels_are_a_422(harness: Harness, mcp_server: McpTestServer) -> None:
    clash = {**WEATHER_FUNCTION, "name": "add"}
    with harness.client() as client:
        answer = client.post(
            "/v1/model/response", json={"inputs": [{"content": "hi"}], "tools": [clash, mcp(mcp_server)]}
        )
        assert answer.status_code == 422 and "also offered by a function tool" in answer.text
        twice = client.post(
            "/v1/model/response", json={"inputs": [{"content": "hi"}], "tools": [mcp(mcp_server), mcp(mcp_server)]}
        )
        assert twice.status_code == 422 and "duplicate server_label" in twice.text
        assert client.get("/v1/threads").json()["data"] == []


def test_an_unreachable_mcp_server_is_a_502_that_stores_nothing(harness: Harness, free_port: Any) -> None:
    gone = {"type": "mcp", "server_label": "gone", "server_url": f"http://127.0.0.1:{free_port()}/mcp"}
    with harness.client() as client:
        answer = client.post("/v1/model/response", json={"inputs": [{"content": "hi"}], "tools": [gone]})
        assert answer.status_code == 502, answer.text
        error = answer.json()["error"]
        assert error["code"] == "MCP_SERVER_UNAVAILABLE" and "'gone'" in error["message"]
        assert client.get("/v1/threads").json()["data"] == []
    assert harness.sim.predictions() == []


def test_a_tool_that_fails_gives_the_model_an_error_result(harness: Harness, mcp_server: McpTestServer) -> None:
    with harness.client() as client:
        answer = client.post(
            "/v1/model/response", json={"inputs": [{"content": "[tool=explode] go"}], "tools": [mcp(mcp_server)]}
        ).json()
    assert answer["status"] == "completed" and mcp_server.names() == ["explode"]
    second = harness.sim.predictions()[1]
    assert "explode" in second["history"][-1]["tool_results"][0]
    tool_message = messages_of(harness, answer["thread_id"])[2]
    assert tool_message["role"] == "tool" and tool_message["metadata"]["is_error"] is True


def test_a_tool_that_outlives_its_timeout_is_an_error_result(make_harness: Any, mcp_server: McpTestServer) -> None:
    h: Harness = make_harness(make_config(tools={"call_timeout_seconds": 0.2}))
    with h.client() as client:
        answer = client.post(
            "/v1/model/response", json={"inputs": [{"content": "[tool=hold] wait"}], "tools": [mcp(mcp_server)]}
        ).json()
    assert answer["status"] == "completed"
    assert "did not finish within 0.2 s" in h.sim.predictions()[1]["history"][-1]["tool_results"][0]


def test_a_call_to_a_tool_nobody_offered_is_answered_with_an_error(harness: Harness, mcp_server: McpTestServer) -> None:
    with harness.client() as client:
        answer = client.post(
            "/v1/model/response", json={"inputs": [{"content": "[tool=!rm_rf] go"}], "tools": [mcp(mcp_server)]}
        ).json()
    assert answer["status"] == "completed" and "tool_calls" not in answer
    assert mcp_server.names() == []
    result = harness.sim.predictions()[1]["history"][-1]["tool_results"][0]
    assert "no tool named 'rm_rf'" in result and "add" in result


def test_the_round_limit_stops_running_tools(make_harness: Any, mcp_server: McpTestServer) -> None:
    h: Harness = make_harness(make_config(tools={"max_rounds": 2}))
    with h.client() as client:
        answer = client.post(
            "/v1/model/response", json={"inputs": [{"content": "[tool=add>add>add] 1 2"}], "tools": [mcp(mcp_server)]}
        ).json()
    assert answer["status"] == "completed" and answer["usage"]["stop_reason"] == "maxToolRounds"
    assert mcp_server.names() == ["add"] and len(h.sim.predictions()) == 2
    stored = messages_of(h, answer["thread_id"])
    assert stored[-1]["role"] == "tool" and "tools.max_rounds" in stored[-1]["content"]


def test_an_mcp_round_then_a_function_call_for_the_client(harness: Harness, mcp_server: McpTestServer) -> None:
    client = v5(harness)
    tools = [mcp(mcp_server), WEATHER_FUNCTION]
    first = client.responses.create_response(
        inputs=[{"role": "user", "content": "[tool=add>get_weather] 2 3 Paris"}], tools=tools
    )
    assert first["stop_reason"] == "tool_calls" and [c["tool_name"] for c in first["tool_calls"]] == ["get_weather"]
    assert mcp_server.names() == ["add"]
    result = {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": "rainy"}
    second = client.responses.create_response(inputs=[result], thread_id=first["thread_id"], tools=tools)
    assert second["status"] == "completed" and "rainy" in second["response"]
    roles = [m["role"] for m in harness.sim.predictions()[-1]["history"]]
    assert roles == ["user", "assistant", "tool", "assistant", "tool"]


# -- cancel, at each phase --------------------------------------------------------------------


def _stream(h: Harness, server: McpTestServer, prompt: str) -> StreamReader:
    return StreamReader(h, {"inputs": [{"role": "user", "content": prompt}], "tools": [mcp(server)]})


def _cancel(h: Harness, thread_id: str) -> dict[str, Any]:
    with h.client() as client:
        answer = client.post(f"/v1/model/response/{thread_id}/cancel")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_cancel_before_the_call_runs_no_tool(make_harness: Any, mcp_server: McpTestServer) -> None:
    h: Harness = make_harness(tokens_per_second=20.0)
    reader = _stream(h, mcp_server, "[tool=add] 1 2")
    reader.wait_deltas(1)
    body = _cancel(h, reader.thread_id)
    assert body["cancel_mode"] == "quick_edit"
    events = reader.join()
    assert events_named(events, "response.cancelled") and not events_named(events, "response.block")
    assert mcp_server.calls == [] and len(h.sim.predictions()) == 1
    with h.client() as client:  # quick_edit: the thread it created is gone
        assert client.get(f"/v1/threads/{reader.thread_id}").status_code == 404
    assert_consistent(h)


def test_a_cancel_while_the_arguments_are_generated_runs_no_tool(make_harness: Any, mcp_server: McpTestServer) -> None:
    h: Harness = make_harness(make_config(cancel={"quick_edit_seconds": 0.0}))
    h.sim.set_faults(None, stall_in_tool_call=True)
    reader = _stream(h, mcp_server, "[tool=add] 1 2")
    thread_id = reader.thread_id
    h.sim.wait_for(lambda records: bool(records) and records[-1]["status"] == "running")
    assert _cancel(h, thread_id)["cancel_mode"] == "keep_partial"
    events = reader.join()
    assert not events_named(events, "response.block") and mcp_server.calls == []
    assert len(h.sim.predictions()) == 1
    last = messages_of(h, thread_id)[-1]
    assert last["metadata"]["cancelled"] is True and "tool_calls" not in last
    assert_consistent(h)


def _cancel_in_background(h: Harness, thread_id: str) -> tuple[threading.Thread, list[dict[str, Any]]]:
    bodies: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: bodies.append(_cancel(h, thread_id)), daemon=True)
    thread.start()
    return thread, bodies


def _stopping(h: Harness) -> bool:
    with h.client() as client:
        active = client.get("/v1/model/response/active").json()["data"]
    return bool(active) and active[0]["stopping"] is True and active[0]["running_tool"] == "hold"


def test_a_cancel_while_a_tool_runs_lets_it_finish_and_starts_nothing_after(
    harness: Harness, mcp_server: McpTestServer
) -> None:
    reader = _stream(harness, mcp_server, "[tool=hold>add] wait")
    thread_id = reader.thread_id
    assert mcp_server.held.wait(20)
    thread, bodies = _cancel_in_background(harness, thread_id)
    wait_until(lambda: _stopping(harness))  # the stop is registered while the tool still runs
    assert mcp_server.finished == []
    mcp_server.gate.set()
    thread.join(20)
    # Within quick_edit's 5 s, but a tool has run: the turn is kept (keep_partial).
    assert bodies[0]["cancel_mode"] == "keep_partial" and bodies[0]["user_message_deleted"] is False
    events = reader.join()
    blocks = [e["block"]["type"] for e in events_named(events, "response.block")]
    assert blocks == ["tool_call", "tool_result"] and events_named(events, "response.cancelled")
    assert mcp_server.names() == ["hold"] and mcp_server.finished == ["hold"]  # it completed; add never ran
    assert len(harness.sim.predictions()) == 1  # no further model round
    stored = messages_of(harness, thread_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool"]
    assert stored[1]["tool_calls"][0]["tool_name"] == "hold" and stored[2]["content"] == "held and released"
    assert_consistent(harness)


def test_a_cancel_in_the_next_round_keeps_the_earlier_rounds(make_harness: Any, mcp_server: McpTestServer) -> None:
    h: Harness = make_harness(tokens_per_second=10.0)
    reader = _stream(h, mcp_server, "[tool=add] 1 2")  # round 2 answers in text (about 2 s of it)

    def second_round_text(events: list[Any]) -> bool:
        kinds = [e["event"] if isinstance(e, dict) else e for e in events]
        after = kinds[kinds.index("response.block") + 2 :] if kinds.count("response.block") == 2 else []
        return after.count("response.content_delta") >= 2

    reader.wait_for(second_round_text)
    body = _cancel(h, reader.thread_id)
    assert body["cancel_mode"] == "keep_partial"
    events = reader.join()
    assert events_named(events, "response.cancelled")
    assert mcp_server.names() == ["add"] and len(h.sim.predictions()) == 2
    stored = messages_of(h, reader.thread_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[-1]["metadata"]["cancelled"] is True and stored[-1]["content"]
    assert_consistent(h)


def test_tool_calls_and_results_survive_a_kill_9(
    tmp_path: Any, simulator_factory: Any, free_port: Any, processes: list[ProxyProcess], mcp_server: McpTestServer
) -> None:
    sim = simulator_factory()
    db = tmp_path / "proxy.sqlite3"
    first = ProxyProcess(sim, db, free_port())
    processes.append(first)
    reader = StreamReader(
        UrlClients(first.url), {"inputs": [{"content": "[tool=add>hold] 1 2"}], "tools": [mcp(mcp_server)]}
    )
    thread_id = reader.thread_id
    assert mcp_server.held.wait(20)  # add's result is stored; hold is running
    first.proc.kill()
    first.proc.wait(10)
    mcp_server.gate.set()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    second = ProxyProcess(sim, db, free_port())
    processes.append(second)
    with second.client() as client:
        stored = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
        assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
        assert stored[1]["tool_calls"][0]["tool_name"] == "add" and stored[2]["content"] == "3"
        assert stored[3]["tool_calls"][0]["tool_name"] == "hold" and stored[3]["metadata"]["interrupted"] is True
        again = client.post(
            "/v1/model/response", json={"thread_id": thread_id, "inputs": [{"content": "and now? [tool=none]"}]}
        )
        assert again.status_code == 200, again.text
    history = sim.predictions()[-1]["history"]
    assert history[4]["tool_results"] == [RESULT_LOST]  # the model is told the result was lost


def test_an_assistants_mcp_tools_run_for_its_threads(harness: Harness, mcp_server: McpTestServer) -> None:
    server = {"server_label": "saved", "server_url": mcp_server.url, "allowed_tools": {"tool_names": ["add"]}}
    with harness.client() as client:
        assistant = client.post(
            "/v1/assistants",
            json={"name": "Adder", "organization_id": "org_local", "tool_configurations": {"mcp_tools": [server]}},
        ).json()
        answer = client.post(
            "/v1/model/response", json={"assistant_id": assistant["id"], "inputs": [{"content": "add 4 and 4"}]}
        ).json()
        assert answer["status"] == "completed", answer
        strict = {"mcp_tools": [{**server, "require_approval": "always"}]}
        other = client.post(
            "/v1/assistants", json={"name": "Careful", "organization_id": "org_local", "tool_configurations": strict}
        ).json()
        refused = client.post(
            "/v1/model/response", json={"assistant_id": other["id"], "inputs": [{"content": "add 4 and 4"}]}
        )
    assert harness.sim.predictions()[0]["tools"] == ["add"] and mcp_server.names() == ["add"]
    assert refused.status_code == 422
    assert refused.json()["error"]["details"]["errors"][0]["field"].endswith("require_approval")


def test_a_client_that_leaves_while_a_tool_runs_stops_after_it(harness: Harness, mcp_server: McpTestServer) -> None:
    body = {"inputs": [{"content": "[tool=hold>add] wait"}], "tools": [mcp(mcp_server)], "stream": True}
    with harness.client() as client, client.stream("POST", "/v1/model/response", json=body) as response:
        lines = response.iter_lines()  # kept: dropping the iterator would close the connection at once
        events = (json.loads(line[6:]) for line in lines if line.startswith("data: {"))
        thread_id = next(e for e in events if e["event"] == "response.block")["thread_id"]
        assert mcp_server.held.wait(20)
    # The connection is closed while `hold` runs.
    wait_until(lambda: _stopping(harness))
    mcp_server.gate.set()
    wait_until(lambda: harness.registry_size() == 0)
    stored = messages_of(harness, thread_id)
    assert [m["role"] for m in stored] == ["user", "assistant", "tool"]
    assert stored[1]["metadata"]["cancel_reason"] == "client_disconnected"
    assert stored[2]["content"] == "held and released"
    assert mcp_server.names() == ["hold"] and len(harness.sim.predictions()) == 1
    assert_consistent(harness)


def test_a_cancel_waits_for_a_tool_that_outlasts_the_drain(
    make_harness: Any, mcp_server: McpTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("proxy.streams.CANCEL_GRACE_SECONDS", 0.0)
    h: Harness = make_harness(make_config(cancel={"drain_timeout_seconds": 0.1}))
    reader = _stream(h, mcp_server, "[tool=hold] wait")
    thread_id = reader.thread_id
    assert mcp_server.held.wait(20)
    thread, bodies = _cancel_in_background(h, thread_id)
    wait_until(lambda: _stopping(h))
    thread.join(1.0)  # ten times the drain timeout: the cancel still waits for the tool
    assert thread.is_alive() and not bodies
    mcp_server.gate.set()
    thread.join(20)
    assert bodies and bodies[0]["cancel_mode"] == "keep_partial"
    reader.join()
    assert_consistent(h)


def test_an_assistants_connector_mcp_tool_is_refused(harness: Harness, mcp_server: McpTestServer) -> None:
    server = {"server_label": "saved", "server_url": mcp_server.url, "connector_id": "conn_1"}
    with harness.client() as client:
        assistant = client.post(
            "/v1/assistants",
            json={"name": "Linked", "organization_id": "org_local", "tool_configurations": {"mcp_tools": [server]}},
        ).json()
        refused = client.post(
            "/v1/model/response", json={"assistant_id": assistant["id"], "inputs": [{"content": "add 4 and 4"}]}
        )
    assert refused.status_code == 422
    assert refused.json()["error"]["details"]["errors"][0]["field"].endswith("connector_id")
    assert harness.sim.predictions() == [] and mcp_server.calls == []
