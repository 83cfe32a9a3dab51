"""The cancel endpoint: quick_edit and keep_partial, exactly, and under every race."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from aitronos import Aitronos
from support import (
    KEY,
    OTHER_KEY,
    Harness,
    StreamReader,
    assert_consistent,
    assert_well_terminated,
    deltas,
    events_named,
    make_config,
    wait_until,
)

QUICK_EDIT_KEYS = {
    "success",
    "cancel_mode",
    "elapsed_seconds",
    "user_message_deleted",
    "assistant_response_deleted",
    "partial_content_saved",
}
LONG = "Tell me a long story [tokens=400]"


def _slow(make_harness: Any, config: Any = None, **sim: Any) -> Harness:
    h: Harness = make_harness(config, **{"tokens_per_second": 40.0, **sim})
    return h


def _new_thread(h: Harness) -> str:
    with h.client() as client:
        thread_id: str = client.post("/v1/threads", json={"title": "t"}).json()["id"]
        return thread_id


def _cancel(h: Harness, thread_id: str, key: str = KEY) -> httpx.Response:
    with h.client(key) as client:
        return client.post(f"/v1/model/response/{thread_id}/cancel")


def _settled(h: Harness) -> dict[str, Any]:
    """The last prediction's record once LM Studio has ended it. A cancel is answered, and the
    stream ends, as soon as LM Studio was *sent* the cancel (see the test of that below), so
    the simulator may still be taking it in when the client has seen the terminal event."""
    record: dict[str, Any] = h.sim.wait_for(lambda rs: bool(rs) and rs[-1]["status"] != "running")[-1]
    return record


def _messages(h: Harness, thread_id: str) -> list[dict[str, Any]]:
    with h.client() as client:
        data: list[dict[str, Any]] = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
        return data


def test_quick_edit_with_the_real_sdk(make_harness: Any) -> None:
    h = _slow(make_harness)
    thread_id = _new_thread(h)
    reader = StreamReader(h, {"thread_id": thread_id, "inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(3)
    with httpx.Client(timeout=30) as http:
        result = Aitronos(api_key=KEY, base_url=h.url, httpx_client=http).responses.cancel_stream(thread_id)
    assert result.cancel_mode == "quick_edit" and result.success is True
    assert result.user_message_deleted and result.assistant_response_deleted and not result.partial_content_saved
    assert 0 < result.elapsed_seconds < 5
    events = reader.join()
    terminal = assert_well_terminated(events)
    assert terminal["event"] == "response.cancelled" and not events_named(events, "response.completed")
    assert terminal["cancel_mode"] == "quick_edit" and terminal["partial_content_length"] == len(deltas(events))
    assert _messages(h, thread_id) == []
    record = _settled(h)
    assert record["status"] == "cancelled" and record["tokens_after_cancel"] == 0
    assert_consistent(h)


def test_quick_edit_deletes_the_thread_it_created(make_harness: Any) -> None:
    h = _slow(make_harness)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(1)
    body = _cancel(h, reader.thread_id).json()
    assert set(body) == QUICK_EDIT_KEYS and body["cancel_mode"] == "quick_edit"
    reader.join()
    with h.client() as client:
        assert client.get(f"/v1/threads/{reader.thread_id}").status_code == 404
    assert_consistent(h)


def test_keep_partial_saves_exactly_what_the_client_saw(make_harness: Any) -> None:
    h = _slow(make_harness, make_config(cancel={"quick_edit_seconds": 0.5}))
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": LONG}]})
    thread_id = reader.thread_id
    with h.client() as client:
        wait_until(
            lambda: any(
                s["cancel_mode_now"] == "keep_partial" and s["partial_content_length"] > 0
                for s in client.get("/v1/model/response/active").json()["data"]
            )
        )
    body = _cancel(h, thread_id).json()
    assert body == {
        **body,
        "success": True,
        "cancel_mode": "keep_partial",
        "user_message_deleted": False,
        "assistant_response_deleted": False,
        "partial_content_saved": True,
    }
    assert body["elapsed_seconds"] >= 0.5
    events = reader.join()
    terminal = assert_well_terminated(events)
    seen = deltas(events)
    assert terminal["event"] == "response.cancelled" and terminal["partial_content_length"] == len(seen) > 0
    user, assistant = _messages(h, thread_id)
    assert user["role"] == "user" and user["content"] == LONG
    assert assistant["content"] == seen
    assert assistant["metadata"]["cancelled"] is True and assistant["metadata"]["cancel_mode"] == "keep_partial"
    assert assistant["metadata"]["partial_content_length"] == len(seen)
    assert_consistent(h)


def test_cancel_before_the_first_token(make_harness: Any) -> None:
    h = _slow(make_harness, prompt_seconds=5.0)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": LONG}]})
    thread_id = reader.thread_id  # the first event, before the prediction even started
    assert _cancel(h, thread_id).json()["cancel_mode"] == "quick_edit"
    events = reader.join()
    assert assert_well_terminated(events)["event"] == "response.cancelled" and deltas(events) == ""
    assert all(r["tokens_generated"] == 0 for r in h.sim.predictions())
    assert_consistent(h)


def test_cancel_during_prompt_processing(make_harness: Any) -> None:
    h = _slow(make_harness, prompt_seconds=5.0)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": LONG}]})
    reader.wait_event("response.created")
    h.sim.wait_for(lambda rs: bool(rs) and rs[-1]["status"] == "running")
    assert _cancel(h, reader.thread_id).json()["cancel_mode"] == "quick_edit"
    assert assert_well_terminated(reader.join())["event"] == "response.cancelled"
    record = _settled(h)
    assert record["status"] == "cancelled" and record["tokens_generated"] == 0
    assert_consistent(h)


def test_cancel_during_model_load(make_harness: Any) -> None:
    h = _slow(make_harness, load_seconds=30.0)
    reader = StreamReader(h, {"model": "simulated-large", "inputs": [{"role": "user", "content": LONG}]})
    reader.wait_for(
        lambda evs: any("Loading" in e.get("message", "") for e in events_named(evs, "response.processing"))
    )
    assert _cancel(h, reader.thread_id).json()["cancel_mode"] == "quick_edit"
    assert assert_well_terminated(reader.join())["event"] == "response.cancelled"
    assert h.sim.predictions() == []  # no prediction was ever started
    assert_consistent(h)


def test_cancel_at_the_moment_of_completion(make_harness: Any) -> None:
    h: Harness = make_harness(tokens_per_second=0.0)
    outcomes = set()
    for i in range(12):
        reader = StreamReader(h, {"inputs": [{"role": "user", "content": f"short {i} [tokens={i % 4 + 1}]"}]})
        if i % 2:
            reader.wait_event("response.created")
        else:
            reader.wait_deltas(1)
        response = _cancel(h, reader.thread_id)
        events = reader.join()
        terminal = assert_well_terminated(events)
        if terminal["event"] == "response.completed":
            assert response.status_code == 404, response.text
            assert response.json()["error"]["message"] == "No active stream found for this thread"
        else:
            assert terminal["event"] == "response.cancelled" and response.status_code == 200
            assert not events_named(events, "response.completed")
        outcomes.add(terminal["event"])
    assert_consistent(h)


def test_two_cancels_at_once_from_two_clients(make_harness: Any) -> None:
    h = _slow(make_harness)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(2)
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: _cancel(h, reader.thread_id), range(2))
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
    assert assert_well_terminated(reader.join())["event"] == "response.cancelled"
    assert_consistent(h)


def test_cancel_and_disconnect_at_once(make_harness: Any) -> None:
    h = _slow(make_harness)
    for order in ("disconnect-first", "cancel-first"):
        thread_id = _new_thread(h)
        reader = StreamReader(h, {"thread_id": thread_id, "inputs": [{"role": "user", "content": LONG}]})
        reader.wait_deltas(2)
        if order == "disconnect-first":
            reader.disconnect()
            with ThreadPoolExecutor(1) as pool:
                response = pool.submit(_cancel, h, thread_id).result()
        else:
            with ThreadPoolExecutor(1) as pool:
                future = pool.submit(_cancel, h, thread_id)
                reader.disconnect()
                response = future.result()
        reader.join()
        assert response.status_code == 200 and response.json()["cancel_mode"] == "quick_edit"
        wait_until(lambda: h.registry_size() == 0)
        assert _messages(h, thread_id) == []  # the seed's Stop button closes the stream, then cancels
        assert _cancel(h, thread_id).json() == response.json()
    assert_consistent(h)


def test_repeated_cancels_and_refusals(make_harness: Any) -> None:
    h = _slow(make_harness)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(1)
    thread_id = reader.thread_id
    assert _cancel(h, thread_id, OTHER_KEY).status_code == 403
    with httpx.Client(base_url=h.url) as anonymous:
        assert anonymous.post(f"/v1/model/response/{thread_id}/cancel").status_code == 401
    bodies = [_cancel(h, thread_id).json() for _ in range(3)]
    assert bodies[0] == bodies[1] == bodies[2] and bodies[0]["cancel_mode"] == "quick_edit"
    reader.join()
    assert _cancel(h, thread_id, OTHER_KEY).status_code == 403
    idle = _new_thread(h)
    missing = _cancel(h, idle)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "No active stream found for this thread"
    assert missing.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    assert_consistent(h)


def test_lmstudio_ignoring_the_cancel(make_harness: Any) -> None:
    h = _slow(make_harness, make_config(cancel={"quick_edit_seconds": 0.0, "drain_timeout_seconds": 0.5}))
    h.sim.set_faults(None, ignore_cancel=True)
    thread_id = _new_thread(h)
    reader = StreamReader(h, {"thread_id": thread_id, "inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(3)
    with h.client() as client:
        response = client.post(f"/v1/model/response/{thread_id}/cancel", timeout=4.0)
    assert response.status_code == 200 and response.json()["cancel_mode"] == "keep_partial"
    events = reader.join()
    assert assert_well_terminated(events)["event"] == "response.cancelled"
    with h.client() as client:
        usage = client.get("/v1/usage", params={"thread_id": thread_id}).json()["data"][0]
        assert (
            usage["status"] == "cancelled"
            and usage["output_tokens"] >= len(events_named(events, "response.content_delta")) > 0
        )
        h.sim.set_faults(None)
        again = client.post(
            "/v1/model/response",
            json={"thread_id": thread_id, "inputs": [{"role": "user", "content": "ok [tokens=2]"}]},
        )
        assert again.status_code == 200 and again.json()["status"] == "completed"


def test_after_quick_edit_the_history_has_no_deleted_messages(make_harness: Any) -> None:
    h = _slow(make_harness)
    with h.client() as client:
        first = client.post(
            "/v1/model/response", json={"inputs": [{"role": "user", "content": "one [tokens=3]"}]}
        ).json()
    thread_id = first["thread_id"]
    reader = StreamReader(h, {"thread_id": thread_id, "inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(1)
    assert _cancel(h, thread_id).json()["cancel_mode"] == "quick_edit"
    reader.join()
    with h.client() as client:
        third = client.post(
            "/v1/model/response",
            json={"thread_id": thread_id, "inputs": [{"role": "user", "content": "three [tokens=2]"}]},
        )
        assert third.status_code == 200
    assert h.sim.predictions()[-1]["history"] == [
        {"role": "user", "text": "one [tokens=3]"},
        {"role": "assistant", "text": first["response"]},
        {"role": "user", "text": "three [tokens=2]"},
    ]
    assert_consistent(h)


def test_usage_and_active_streams(make_harness: Any) -> None:
    h = _slow(make_harness)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(2)
    with h.client() as client:
        active = client.get("/v1/model/response/active").json()["data"]
        assert [a["thread_id"] for a in active] == [reader.thread_id]
        assert active[0]["cancel_mode_now"] == "quick_edit" and active[0]["model"] == "simulated-llm"
        with h.client(OTHER_KEY) as other:
            assert other.get("/v1/model/response/active").json()["data"] == []
        _cancel(h, reader.thread_id)
        reader.join()
        assert client.get("/v1/model/response/active").json()["data"] == []
        usage = client.get("/v1/usage").json()["data"]
        record = _settled(h)
        assert usage[0]["status"] == "cancelled" and usage[0]["cancel_mode"] == "quick_edit"
        assert usage[0]["output_tokens"] == record["tokens_generated"] > 0 and usage[0]["stop_reason"] == "userStopped"
        # LM Studio's own counts land once its final packet is in (the cancel does not wait for it).
        wait_until(lambda: client.get("/v1/usage").json()["data"][0]["input_tokens"] > 0)
        with h.client(OTHER_KEY) as other:
            assert other.get("/v1/usage").json()["data"] == []
    assert_consistent(h)


def test_a_cancel_is_answered_before_lm_studio_confirms_and_its_counts_come_later(make_harness: Any) -> None:
    h = make_harness(make_config(cancel={"drain_timeout_seconds": 30.0}), tokens_per_second=100.0)
    h.sim.set_faults(None, ignore_cancel=True)  # LM Studio's final packet comes only at the natural end (3 s)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": "count [tokens=300]"}]})
    reader.wait_deltas(3)
    assert _cancel(h, reader.thread_id).json()["cancel_mode"] == "quick_edit"
    assert h.sim.predictions()[-1]["status"] == "running"  # answered while LM Studio was still going
    events = reader.join()
    assert events_named(events, "response.cancelled")
    with h.client() as client:
        usage = client.get("/v1/usage").json()["data"][0]
        assert usage["status"] == "cancelled" and usage["input_tokens"] == 0  # counted so far: output only
        h.sim.wait_for(lambda records: records[-1]["status"] != "running")
        wait_until(lambda: client.get("/v1/usage").json()["data"][0]["input_tokens"] > 0)
        final = client.get("/v1/usage").json()["data"][0]
    assert final["status"] == "cancelled" and final["stop_reason"] == "eosFound"  # LM Studio's word, as before
