"""The wire contract as clients meet it: defects of the hand-written parser, each pinned by a test."""

from __future__ import annotations

import logging
import socket
import sqlite3
from typing import Any

import httpx
import pytest
from support import KEY, Harness, make_config, wait_until

NAN_BODIES = {
    "thread": ("/v1/threads", b'{"title": "t", "metadata": {"score": NaN}}'),
    "thread-infinity": ("/v1/threads", b'{"metadata": {"deep": [1, {"x": -Infinity}]}}'),
    "response": ("/v1/model/response", b'{"inputs": [{"content": "hi"}], "metadata": {"score": NaN}}'),
}


def _rows(h: Harness) -> list[int]:
    with sqlite3.connect(h.db) as db:
        return [db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("threads", "messages", "responses")]


@pytest.mark.parametrize("case", NAN_BODIES.values(), ids=NAN_BODIES.keys())
def test_nan_in_metadata_is_a_422_that_stores_nothing(harness: Harness, case: tuple[str, bytes]) -> None:
    path, body = case
    with harness.client() as client:
        before = _rows(harness)
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"]["errors"][0]["field"] == "metadata"
        assert _rows(harness) == before
        assert client.get("/v1/threads").status_code == 200  # the owner's list still reads


def test_a_client_leaving_a_json_request_is_not_a_server_error(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"inputs": [{"content": "A long one [tokens=5000]"}]}'
    host, port = harness.url.removeprefix("http://").split(":")
    request = (
        f"POST /v1/model/response HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with caplog.at_level(logging.INFO), socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        harness.sim.wait_for(lambda records: bool(records))  # LM Studio is generating

    wait_until(lambda: harness.registry_size() == 0)
    record = wait_until(lambda: [r for r in harness.sim.predictions() if r["status"] != "running"])[0]
    assert record["cancel_received_at"] is not None and record["tokens_after_cancel"] == 0
    metrics = httpx.get(f"{harness.url}/metrics").text
    assert 'endpoint="/v1/model/response",method="POST",status="500"' not in metrics
    assert 'status="499"' in metrics
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]


def test_the_stream_is_data_frames_only(harness: Harness) -> None:
    """No comment lines (a ping-spinning SSE library sent thousands), one `data:` line a frame."""
    body = {"inputs": [{"content": "Twenty [tokens=20]"}], "stream": True}
    with harness.client() as client, client.stream("POST", "/v1/model/response", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    frames = raw.split("\n\n")
    assert frames[-1] == "" and frames[-2] == "data: [DONE]"
    assert all(f.startswith("data: ") and "\n" not in f for f in frames[:-1]), frames[:5]


def test_patching_message_metadata_merges_it(harness: Harness) -> None:
    with harness.client() as client:
        created = client.post("/v1/model/response", json={"inputs": [{"content": "hi [tokens=3]"}]}).json()
        messages = client.get(f"/v1/threads/{created['thread_id']}/messages").json()["data"]
        answer = next(m for m in messages if m["role"] == "assistant")
        assert answer["metadata"]["stop_reason"]
        url = f"/v1/threads/{created['thread_id']}/messages/{answer['id']}"
        patched = client.patch(url, json={"metadata": {"note": "kept", "model": None}}).json()
    assert patched["metadata"] == {"stop_reason": answer["metadata"]["stop_reason"], "note": "kept"}


def test_snake_case_wins_over_camel_case(harness: Harness) -> None:
    body = {"inputs": [{"content": "hi [tokens=3]"}], "max_tokens": 7, "maxTokens": 99}
    with harness.client() as client:
        assert client.post("/v1/model/response", json=body).status_code == 200
    config = harness.sim.predictions()[-1]["config"]
    assert config["llm.prediction.maxPredictedTokens"]["value"] == 7


def test_a_camel_case_mistake_is_named_as_sent(harness: Harness) -> None:
    with harness.client() as client:
        response = client.post("/v1/model/response", json={"inputs": [{"content": "hi"}], "outputMode": "bogus"})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["error"]["details"]["errors"]] == ["outputMode"]


def test_an_unknown_output_mode_for_messages_is_a_422(harness: Harness) -> None:
    with harness.client() as client:
        thread = client.post("/v1/threads", json={}).json()
        response = client.get(f"/v1/threads/{thread['id']}/messages", params={"output_mode": "bogus"})
    assert response.status_code == 422
    assert response.json()["error"]["details"]["errors"][0]["field"] == "output_mode"


@pytest.mark.parametrize("path", ["/v1/threads", "/v1/model/response"])
def test_one_depth_limit_for_parsing_storing_and_reading(harness: Harness, path: str) -> None:
    """What is accepted can be stored and read back for good; what is deeper is a 400 that stores nothing."""
    inputs = b'"inputs": [{"content": "hi [tokens=2]"}], ' if path.endswith("response") else b""
    with harness.client() as client:
        before = _rows(harness)
        for depth in (970, 300):  # near Python's recursion limit, and just over the parser's
            deep = b"{" + inputs + b'"metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
            response = client.post(path, content=deep, headers={"content-type": "application/json"})
            assert response.status_code == 400 and "nested too deeply" in response.text, response.text
        assert _rows(harness) == before
        ok = b"{" + inputs + b'"metadata": {"a": ' + b"[" * 150 + b"]" * 150 + b"}}"
        assert client.post(path, content=ok, headers={"content-type": "application/json"}).status_code in (200, 201)
        assert client.get("/v1/threads").status_code == 200
    harness.server.stop()
    harness.server.start()  # and after a restart (on a new port)
    assert httpx.get(f"{harness.server.base_url}/v1/threads", headers={"X-API-Key": KEY}).status_code == 200


def test_one_request_cannot_ask_for_everything(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(limits={"max_inputs": 50, "max_page_bytes": 300_000}))
    with h.client() as client:
        many = {"inputs": [{"content": "x"}] * 51}
        refused = client.post("/v1/model/response", json=many)
        assert refused.status_code == 422 and "max_inputs" in refused.json()["error"]["message"]
        thread = client.post("/v1/threads", json={}).json()
        for _ in range(3):  # three 200 KB messages (an edited message may be as large as a body)
            reply = client.post(
                "/v1/model/response", json={"thread_id": thread["id"], "inputs": [{"content": "y" * 200_000}]}
            )
            assert reply.status_code == 200, reply.text
        first = client.get(f"/v1/threads/{thread['id']}/messages", params={"limit": 100}).json()
        assert first["has_more"] is True and 1 <= len(first["data"]) < 6
        rest = client.get(
            f"/v1/threads/{thread['id']}/messages", params={"limit": 100, "after": first["last_id"]}
        ).json()
        assert len(first["data"]) + len(rest["data"]) <= 6 and rest["data"]
