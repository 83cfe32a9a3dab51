"""The real client SDKs (aitronos-sdk 5.0.0, aitronos-freddy 0.1.2) against the real server."""

from __future__ import annotations

import json

import httpx
import pytest
from aitronos import AsyncAitronos
from aitronos.core.http_sse import EventSource
from support import KEY, Harness, v5


def test_v5_create_response_and_threads(harness: Harness) -> None:
    client = v5(harness)
    body = client.responses.create_response(inputs=[{"role": "user", "content": "Hello [tokens=5]"}])
    assert body["success"] is True and body["status"] == "completed"
    assert len(body["response"]) > 0 and body["usage"]["output_tokens"] == 5
    thread_id = body["thread_id"]

    thread = client.threads.get_thread(thread_id)
    assert thread.id == thread_id and thread.message_count == 2 and thread.status == "inactive"
    assert thread.last_model_used == body["model"]

    updated = client.threads.update_thread(thread_id, title="Renamed", metadata={"k": "v"})
    assert updated.title == "Renamed" and updated.metadata == {"k": "v"}
    pinned = client.threads.pin_thread(thread_id)
    assert pinned.is_pinned is True and pinned.pinned_at
    assert client.threads.unpin_thread(thread_id).is_pinned is False

    messages = client.messages.get_thread_messages(thread_id)
    assert [m.role for m in messages.data] == ["user", "assistant"]
    assert messages.data[0].content == "Hello [tokens=5]"
    assert messages.data[1].content == body["response"]
    edited = client.messages.update_message(thread_id, messages.data[0].id, content="Edited")
    assert edited.content == "Edited"
    deleted = client.messages.delete_message(thread_id, messages.data[1].id)
    assert deleted.deleted is True
    assert [m.id for m in client.messages.get_thread_messages(thread_id).data] == [messages.data[0].id]

    client.threads.delete_thread(thread_id)
    listed = client.threads.list_threads()
    assert thread_id not in [t.id for t in listed.data]


def test_v5_pagination(harness: Harness) -> None:
    client = v5(harness)
    ids = [client.threads.create_thread(organization_id="org_a", title=f"t{i}").id for i in range(5)]
    page = client.threads.list_threads(limit=2)  # newest first
    assert [t.id for t in page.data] == ids[::-1][:2] and page.has_more is True
    page2 = client.threads.list_threads(limit=2, after=page.last_id)
    assert [t.id for t in page2.data] == ids[::-1][2:4] and page2.has_more is True
    page3 = client.threads.list_threads(limit=2, after=page2.last_id)
    assert [t.id for t in page3.data] == ids[::-1][4:] and page3.has_more is False
    back = client.threads.list_threads(limit=2, before=page3.first_id)
    assert [t.id for t in back.data] == ids[::-1][2:4]
    asc = client.threads.list_threads(limit=10, order="asc", include_total=True)
    assert [t.id for t in asc.data] == ids and asc.total == 5

    thread_id = client.responses.create_response(inputs=[{"role": "user", "content": "one [tokens=2]"}])["thread_id"]
    for text in ("two [tokens=2]", "three [tokens=2]"):
        client.responses.create_response(inputs=[{"role": "user", "content": text}], thread_id=thread_id)
    first = client.messages.get_thread_messages(thread_id, limit=4)
    assert len(first.data) == 4 and first.has_more is True
    rest = client.messages.get_thread_messages(thread_id, limit=4, after=first.last_id)
    assert len(rest.data) == 2 and rest.has_more is False
    newest = client.messages.get_thread_messages(thread_id, limit=1, order="desc")
    assert newest.data[0].id == rest.data[-1].id


async def test_async_v5(harness: Harness) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = AsyncAitronos(api_key=KEY, base_url=harness.url, httpx_client=http)
        body = await client.responses.create_response(inputs=[{"role": "user", "content": "Hi async [tokens=3]"}])
        assert body["usage"]["output_tokens"] == 3
        threads = await client.threads.list_threads()
        assert body["thread_id"] in [t.id for t in threads.data]
        messages = await client.messages.get_thread_messages(body["thread_id"])
        assert len(messages.data) == 2


def test_freddy_parses_the_body(harness: Harness) -> None:
    freddy = pytest.importorskip("freddy")
    with freddy.FreddyClient(api_key=KEY, base_url=harness.url) as client:
        response = client.responses.create(
            model="simulated-llm", inputs=[{"role": "user", "content": "Hi freddy [tokens=4]"}], max_tokens=50
        )
    assert response.status == "completed" and response.model == "simulated-llm"
    assert response.output[0].content[0].text
    assert isinstance(response.created_at, int)


def test_v5_streaming_transport(harness: Harness) -> None:
    client = v5(harness)
    http = client._client_wrapper.httpx_client
    body = {"inputs": [{"role": "user", "content": "Stream me [tokens=30]"}], "stream": True}
    with http.stream("v1/model/response", method="POST", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [sse.data for sse in EventSource(response).iter_sse()]
        assert response.is_stream_consumed

    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    names = [e["event"] for e in parsed]
    assert names[0] == "response.processing" and names[1] == "response.created"
    terminal = [n for n in names if n in ("response.completed", "response.error", "response.cancelled")]
    assert terminal == ["response.completed"] and names[-1] == "response.completed"
    deltas = "".join(e["delta"] for e in parsed if e["event"] == "response.content_delta")
    assert deltas == parsed[-1]["response"] and parsed[-1]["usage"]["output_tokens"] == 30
