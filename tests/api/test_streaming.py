"""Streaming behaviour against a real uvicorn and the simulator: delivery, history, faults, modes."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from typing import Any

import httpx
from support import (
    KEY,
    Harness,
    assert_well_terminated,
    deltas,
    events_named,
    make_config,
    read_events,
    stream_all,
    wait_until,
)

from proxy.bench.raw_client import RawClient
from proxy.simulator import Simulator


def _last_prediction(sim: Simulator) -> dict[str, Any]:
    return sim.predictions()[-1]


def test_first_delta_arrives_before_the_prediction_ends(make_harness: Any) -> None:
    h: Harness = make_harness(tokens_per_second=20.0)
    body = {"inputs": [{"role": "user", "content": "Slowly [tokens=40]"}], "stream": True}
    with h.client() as client, client.stream("POST", "/v1/model/response", json=body) as response:
        events = read_events(response)
        for event in events:
            if isinstance(event, dict) and event["event"] == "response.content_delta":
                break
        # At 20 tokens/s a 40-token answer takes 2 s; the first delta is here long before that.
        record = _last_prediction(h.sim)
        assert record["status"] == "running" and record["tokens_generated"] < 40
        rest = list(events)
    assert assert_well_terminated(rest)["event"] == "response.completed"


def test_thread_history_instructions_and_config_reach_lmstudio(harness: Harness) -> None:
    with harness.client() as client:
        first = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "First [tokens=4]"}]})
        first.raise_for_status()
        thread_id = first.json()["thread_id"]
        second = client.post(
            "/v1/model/response",
            json={
                "inputs": [{"role": "user", "content": [{"type": "text", "text": "Second [tokens=3]"}]}],
                "thread_id": thread_id,
                "instructions": "Be brief.",
                "temperature": 0.3,
                "top_p": 0.9,
                "max_output_synapses": 2,
            },
        )
        second.raise_for_status()
    record = _last_prediction(harness.sim)
    assert record["history"] == [
        {"role": "system", "text": "Be brief."},
        {"role": "user", "text": "First [tokens=4]"},
        {"role": "assistant", "text": first.json()["response"]},
        {"role": "user", "text": "Second [tokens=3]"},
    ]
    config = record["config"]
    assert config["llm.prediction.temperature"] == 0.3
    assert config["llm.prediction.topPSampling"] == {"checked": True, "value": 0.9}
    assert config["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 2}
    assert second.json()["usage"]["output_tokens"] == 2
    assert second.json()["usage"]["stop_reason"] == "maxPredictedTokensReached"


def test_client_disconnect_stops_lmstudio_and_keeps_the_partial(make_harness: Any) -> None:
    h: Harness = make_harness(tokens_per_second=50.0)
    body = {"inputs": [{"role": "user", "content": "Long one [tokens=500]"}], "stream": True}
    received = []
    with h.client() as client:
        with client.stream("POST", "/v1/model/response", json=body) as response:
            for event in read_events(response):
                if isinstance(event, dict):
                    received.append(event)
                    if len(events_named(received, "response.content_delta")) >= 3:
                        break
        thread_id = received[0]["thread_id"]
        records = h.sim.wait_for(lambda rs: bool(rs) and rs[-1]["status"] != "running", timeout=10)
        assert records[-1]["status"] == "cancelled" and records[-1]["tokens_after_cancel"] == 0
        wait_until(lambda: h.registry_size() == 0)
        messages = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        meta = messages[1]["metadata"]
        assert meta["cancelled"] is True and meta["cancel_reason"] == "client_disconnected"
        assert messages[1]["content"].startswith(deltas(received))
        assert client.get(f"/v1/threads/{thread_id}").json()["status"] == "inactive"
        usage = client.get("/v1/usage", params={"thread_id": thread_id}).json()["data"]
        assert usage[0]["status"] == "cancelled" and usage[0]["stop_reason"] == "userStopped"
        assert usage[0]["output_tokens"] == records[-1]["tokens_generated"] > 0


def test_client_gone_before_the_response_starts_still_stops_lmstudio(make_harness: Any) -> None:
    # The socket closes as soon as LM Studio has the prediction, before the client read a byte:
    # the proxy may notice before its SSE body has started, where the body can't see it.
    h: Harness = make_harness(tokens_per_second=50.0)
    payload = json.dumps({"inputs": [{"role": "user", "content": "Nobody reads [tokens=500]"}], "stream": True})
    host, port = h.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/model/response HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head.encode() + payload.encode())
        h.sim.wait_for(lambda rs: len(rs) == 1)
    records = h.sim.wait_for(lambda rs: bool(rs) and rs[-1]["status"] != "running", timeout=10)
    assert records[-1]["status"] == "cancelled" and records[-1]["tokens_generated"] < 500
    wait_until(lambda: h.registry_size() == 0)
    with h.client() as client:
        usage = client.get("/v1/usage").json()["data"]
        assert usage[0]["status"] == "cancelled" and usage[0]["cancel_mode"] == "disconnect"


def test_lmstudio_down_at_start_then_up(tmp_path: Any, free_port: Any) -> None:
    from proxy.background import BackgroundServer

    port = free_port()
    server = BackgroundServer(make_config(), lmstudio_host=f"127.0.0.1:{port}", database=tmp_path / "db")
    with server, httpx.Client(base_url=server.base_url, headers={"X-API-Key": KEY}, timeout=30) as client:
        health = client.get("/health").json()
        assert health["lmstudio"]["reachable"] is False
        assert f"127.0.0.1:{port}" in health["lmstudio"]["looked_at"]
        down = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "hi"}]})
        assert down.status_code == 503
        error = down.json()["error"]
        assert error["code"] == "MODEL_BACKEND_UNAVAILABLE" and "--simulate" in error["message"]
        assert client.get("/v1/threads").json()["data"] == []  # nothing stored
        with Simulator(port=port, tokens_per_second=0.0):
            up = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "hi [tokens=2]"}]})
            assert up.status_code == 200 and up.json()["status"] == "completed"
            assert client.get("/health").json()["lmstudio"]["reachable"] is True


def _fault_run(h: Harness, fault: dict[str, Any]) -> None:
    h.sim.set_faults(None, **fault)
    with h.client() as client:
        events = stream_all(client, {"inputs": [{"role": "user", "content": "Faulty [tokens=50]"}]})
        terminal = assert_well_terminated(events)
        assert terminal["event"] == "response.error" and terminal["status"] == "failed"
        thread_id = events[0]["thread_id"]  # type: ignore[index]
        messages = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
        assert messages[-1]["role"] == "assistant" and messages[-1]["content"] == deltas(events)
        assert messages[-1]["metadata"]["failed"] is True and messages[-1]["metadata"]["error"]["message"]
        assert len(deltas(events)) > 0
        h.sim.set_faults(None)
        again = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "ok [tokens=2]"}]})
        assert again.status_code == 200 and again.json()["status"] == "completed"


def test_lmstudio_failing_mid_stream(harness: Harness) -> None:
    _fault_run(harness, {"fail_after_tokens": 3})


def test_lmstudio_vanishing_mid_stream(harness: Harness) -> None:
    _fault_run(harness, {"drop_after_tokens": 3})


def test_slow_load_sends_heartbeats_and_processing(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(streaming={"heartbeat_seconds": 0.1}), load_seconds=1.0)
    with h.client() as client:
        events = stream_all(
            client, {"model": "simulated-large", "inputs": [{"role": "user", "content": "x [tokens=3]"}]}
        )
    names = [e["event"] for e in events if isinstance(e, dict)]
    created = names.index("response.created")
    assert "response.heartbeat" in names[:created]
    assert any("Loading model" in e["message"] for e in events_named(events, "response.processing"))
    assert assert_well_terminated(events)["event"] == "response.completed"


def test_load_timeout_is_a_clear_error(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(lmstudio={"load_timeout_seconds": 0.3}), load_seconds=30.0)
    with h.client() as client:
        events = stream_all(client, {"model": "simulated-large", "inputs": [{"role": "user", "content": "x"}]})
    terminal = assert_well_terminated(events)
    assert terminal["event"] == "response.error" and "loading model" in terminal["message"]
    assert h.sim.predictions() == []  # no prediction was ever started in LM Studio


def test_output_modes_and_reasoning(harness: Harness) -> None:
    with harness.client() as client:
        text = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "md [tokens=40]"}]})
        raw = text.json()["response"]
        assert any(mark in raw for mark in ("**", "`", "#", "- "))
        plain = client.post(
            "/v1/model/response",
            json={"inputs": [{"role": "user", "content": "md [tokens=40]"}], "output_mode": "plain"},
        ).json()
        assert not any(mark in plain["response"] for mark in ("**", "`", "## ", "\n- "))
        assert plain["response"].split()[:1] == [w for w in raw.replace("#", "").split() if w][:1]
        structured = stream_all(
            client, {"inputs": [{"role": "user", "content": "md [tokens=40]"}], "output_mode": "structured"}
        )
        done = assert_well_terminated(structured)
        assert "response" not in done and {b["type"] for b in done["response_blocks"]} >= {"heading"}
        reasoning = stream_all(client, {"model": "simulated-reasoner", "inputs": [{"role": "user", "content": "why"}]})
    names = [e["event"] for e in reasoning if isinstance(e, dict)]
    assert names.index("reasoning.started") < names.index("reasoning.completed") < names.index("response.content_delta")
    done = assert_well_terminated(reasoning)
    thoughts = "".join(e["content"] for e in events_named(reasoning, "reasoning.content"))
    assert done["reasoning_content"] == thoughts and thoughts
    assert "<think>" not in done["response"] and done["response"] == deltas(reasoning)


def test_keys_are_stored_only_as_hashes(harness: Harness) -> None:
    with harness.client() as client:
        client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "x [tokens=1]"}]})
    dump = "\n".join(sqlite3.connect(harness.db).iterdump())
    assert KEY not in dump and json.dumps(KEY)[1:-1] not in dump


def test_a_stalled_prediction_is_abandoned_and_cancelled(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(lmstudio={"fragment_timeout_seconds": 0.5}))
    h.sim.set_faults(None, stall=True)
    with h.client() as client:
        events = stream_all(client, {"inputs": [{"role": "user", "content": "stall"}]})
    terminal = assert_well_terminated(events)
    assert terminal["event"] == "response.error" and "sent nothing" in terminal["message"]
    record = h.sim.wait_for(lambda rs: bool(rs) and rs[-1]["status"] != "running")[-1]
    assert record["status"] == "cancelled"  # LM Studio was told to stop, not left running


def test_the_completed_event_ends_with_its_usage(harness: Harness) -> None:
    """Usage is the last key of `response.completed`: a reader of the stream's last bytes (the
    bench's minimal client, a log tail) finds the counts however long the answer was."""
    body = {"inputs": [{"role": "user", "content": "Long answer [tokens=1500]"}], "stream": True}
    with harness.client() as client, client.stream("POST", "/v1/model/response", json=body) as response:
        raw = b"".join(response.iter_bytes())
    last_frame = raw.rstrip().split(b"\n\n")[-2]
    completed = json.loads(last_frame.removeprefix(b"data: "))
    assert completed["event"] == "response.completed"
    assert list(completed)[-1] == "usage" and completed["usage"]["output_tokens"] == 1500
    assert len(completed["response"]) > 4096  # longer than the tail the bench client once kept


def test_the_bench_client_reads_a_long_answers_usage(harness: Harness) -> None:
    async def read() -> int:
        client = RawClient(harness.url)
        try:
            return await client.stream({"inputs": [{"role": "user", "content": "Long [tokens=2000]"}], "stream": True})
        finally:
            await client.aclose()

    assert asyncio.run(read()) == 2000
