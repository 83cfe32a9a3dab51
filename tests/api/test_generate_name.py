"""`POST /v1/threads/{id}/generateName`: v5's `threads.generate_thread_name`, against the simulator."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from aitronos import Aitronos, AsyncAitronos
from aitronos.core.api_error import ApiError
from aitronos.errors.unprocessable_entity_error import UnprocessableEntityError
from support import KEY, OTHER_KEY, Harness, make_config, read_events

from proxy.api_threads import clean_title


def v5(harness: Harness, key: str = KEY) -> Aitronos:
    http = httpx.Client(timeout=30)
    harness.closers.append(http.close)
    return Aitronos(api_key=key, base_url=harness.url, httpx_client=http)


def _title_ok(title: str) -> None:
    assert 2 <= len(title.split()) <= 5 and len(title) <= 50, title
    assert not any(c in title for c in '#*`"\n'), title


def test_name_from_the_stored_messages(harness: Harness) -> None:
    client = v5(harness)
    thread_id = client.responses.create_response(
        inputs=[{"role": "user", "content": "How do I mount Docker volumes? [tokens=4]"}]
    )["thread_id"]
    harness.sim.clear()
    body = client.threads.generate_thread_name(thread_id)
    assert body["success"] is True and body["thread_id"] == body["threadId"] == thread_id
    assert body["name"] == body["title"] and body["model"] == "simulated-llm"
    _title_ok(body["name"])
    assert client.threads.get_thread(thread_id).title == body["name"]

    (prediction,) = harness.sim.predictions()
    prompt = prediction["history"][-1]["text"]
    assert "User: How do I mount Docker volumes?" in prompt and "Assistant: " in prompt
    assert prediction["history"][0]["role"] == "system" and prediction["status"] == "completed"


def test_name_from_the_messages_given(harness: Harness) -> None:
    client = v5(harness)
    thread = client.threads.create_thread(organization_id="org_local", title="Old")
    harness.sim.clear()
    given = [{"role": "user", "content": "Plan a trip to Kyoto in spring"}, {"role": "assistant", "content": "Sure."}]
    body = client.threads.generate_thread_name(thread.id, messages=given)
    _title_ok(body["name"])
    assert client.threads.get_thread(thread.id).title == body["name"] != "Old"
    prompt = harness.sim.predictions()[0]["history"][-1]["text"]
    assert "User: Plan a trip to Kyoto in spring" in prompt and "Assistant: Sure." in prompt
    assert client.threads.get_thread(thread.id).message_count == 0  # the messages given are not stored


def test_title_model_is_configurable(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(make_config(models={"title_model": "simulated-reasoner"}))
    client = v5(h)
    thread = client.threads.create_thread(organization_id="org_local")
    body = client.threads.generate_thread_name(thread.id, messages=[{"role": "user", "content": "Sort a list in Go"}])
    assert body["model"] == "simulated-reasoner"
    assert [p["model"] for p in h.sim.predictions()] == ["simulated-reasoner"]
    _title_ok(body["name"])  # the reasoning is not part of the title


def test_streaming_deltas_then_the_name(harness: Harness) -> None:
    thread_id = v5(harness).threads.create_thread(organization_id="org_local").id
    with (
        harness.client() as client,
        client.stream(
            "POST", f"/v1/threads/{thread_id}/generateName", params={"stream": "true"},
            json={"messages": [{"role": "user", "content": "Explain TCP slow start"}]},
        ) as response,
    ):  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(response))
    assert events[-1] == "[DONE]"
    deltas = [e for e in events if isinstance(e, dict) and e["event"] == "thread.name.delta"]
    done = events[-2]
    assert isinstance(done, dict) and done["event"] == "thread.name.completed" and len(deltas) > 1
    assert done["name"] == clean_title("".join(d["delta"] for d in deltas), "")
    with harness.client() as client:
        assert client.get(f"/v1/threads/{thread_id}").json()["title"] == done["name"]


def test_sdk_with_stream_true_gets_the_event_stream(harness: Harness) -> None:
    """v5 parses every answer as JSON: with stream=True it raises, carrying the SSE text (status 200)."""
    client = v5(harness)
    thread_id = client.threads.create_thread(organization_id="org_local").id
    with pytest.raises(ApiError) as raised:
        client.threads.generate_thread_name(thread_id, stream=True, messages=[{"role": "user", "content": "Hi there"}])
    assert raised.value.status_code == 200
    assert isinstance(raised.value.body, str) and "thread.name.completed" in raised.value.body
    last = json.loads(raised.value.body.strip().split("\n\n")[-2].removeprefix("data: "))
    assert client.threads.get_thread(thread_id).title == last["name"]


def test_a_client_that_leaves_stops_the_prediction(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(tokens_per_second=20.0)
    thread_id = v5(h).threads.create_thread(organization_id="org_local").id
    with (
        h.client() as client,
        client.stream(
            "POST", f"/v1/threads/{thread_id}/generateName?stream=true",
            json={"messages": [{"role": "user", "content": "A long one"}]},
        ) as response,
    ):  # fmt: skip
        for event in read_events(response):
            assert isinstance(event, dict) and event["event"] == "thread.name.delta"
            break  # gone after the first delta
    (prediction,) = h.sim.wait_for(lambda ps: bool(ps) and ps[0]["status"] != "running", timeout=15)
    assert prediction["status"] == "cancelled" and prediction["tokens_after_cancel"] == 0
    with h.client() as client:
        assert client.get(f"/v1/threads/{thread_id}").json()["title"] is None


def test_errors(harness: Harness) -> None:
    client = v5(harness)
    empty = client.threads.create_thread(organization_id="org_local").id
    with pytest.raises(UnprocessableEntityError) as nothing:
        client.threads.generate_thread_name(empty)
    error = nothing.value.body["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"]["errors"][0]["field"] == "messages"

    with pytest.raises(ApiError) as foreign:
        v5(harness, OTHER_KEY).threads.generate_thread_name(empty, messages=[{"role": "user", "content": "x y"}])
    assert foreign.value.status_code == 403 and foreign.value.body["error"]["code"] == "INSUFFICIENT_PERMISSIONS"
    with pytest.raises(ApiError) as unknown:
        client.threads.generate_thread_name("thrd_unknown", messages=[{"role": "user", "content": "x y"}])
    assert unknown.value.status_code == 404

    bad: list[dict[str, Any]] = [{"role": "robot", "content": "x"}, {"role": "user"}]
    with harness.client() as http:
        response = http.post(f"/v1/threads/{empty}/generateName", json={"messages": bad})
        assert response.status_code == 422
        fields = [e["field"] for e in response.json()["error"]["details"]["errors"]]
        assert fields == ["messages[0].role", "messages[1].content"]
        not_bool = http.post(f"/v1/threads/{empty}/generateName?stream=perhaps", json={})
        assert not_bool.status_code == 422 and not_bool.json()["error"]["details"]["errors"][0]["field"] == "stream"
    assert harness.sim.predictions() == []


def test_lmstudio_gone_is_a_503(harness: Harness) -> None:
    client = v5(harness)
    thread_id = client.threads.create_thread(organization_id="org_local").id
    harness.sim.stop()
    with pytest.raises(ApiError) as gone:
        client.threads.generate_thread_name(thread_id, messages=[{"role": "user", "content": "Hello there"}])
    assert gone.value.status_code == 503 and gone.value.body["error"]["code"] == "MODEL_BACKEND_UNAVAILABLE"
    assert client.threads.get_thread(thread_id).title is None


async def test_generate_name_async(harness: Harness) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = AsyncAitronos(api_key=KEY, base_url=harness.url, httpx_client=http)
        thread = await client.threads.create_thread(organization_id="org_local")
        body = await client.threads.generate_thread_name(
            thread.id, stream=False, messages=[{"role": "user", "content": "Bake sourdough bread at home"}]
        )
        _title_ok(body["name"])
        assert (await client.threads.get_thread(thread.id)).title == body["name"]


@pytest.mark.parametrize(
    ("raw", "title"),
    [
        ('Title: "Docker Volume Setup."', "Docker Volume Setup"),
        ("## Lantern river\n\nMarble **quiet**", "Lantern river"),
        ("<think>hmm, let me see</think>\n**Kyoto Spring Trip**", "Kyoto Spring Trip"),
        ("one two three four five six seven", "one two three four five"),
        ("Docker", "Docker How do I mount"),
        ("", "How do I mount volumes"),
        ("- Supercalifragilisticexpialidocious Antidisestablishmentarianism Pneumonoultramicroscopic", None),
    ],
)
def test_clean_title(raw: str, title: str | None) -> None:
    cleaned = clean_title(raw, "How do I mount volumes?")
    if title is not None:
        assert cleaned == title
    assert len(cleaned) <= 50 and cleaned == cleaned.strip()
