"""Every method of v5's responses, threads and messages groups, through the real SDK, sync and async.

(The models, files, assistants, health and config groups have their own files.)
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
from aitronos import AsyncAitronos
from support import KEY, Harness, make_config, v5

LONG = {"role": "user", "content": "A long one [tokens=2000]"}


def test_every_sync_method(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(cancel={"quick_edit_seconds": 0.0}), tokens_per_second=40.0)
    client = v5(h)
    assert [m.mode for m in client.responses.get_output_modes().output_modes][:2] == ["text", "plain"]
    assert [lv.level for lv in client.responses.get_reasoning_levels().reasoning_levels] == ["medium"]

    thread = client.threads.create_thread(organization_id="org_local", title="groups")
    assert client.threads.get_thread(thread.id).title == "groups"
    assert client.threads.update_thread(thread.id, title="renamed").title == "renamed"
    assert client.threads.pin_thread(thread.id).is_pinned is True
    assert client.threads.unpin_thread(thread.id).is_pinned is False
    body = client.responses.create_response(inputs=[{"role": "user", "content": "hi [tokens=3]"}], thread_id=thread.id)
    assert body["status"] == "completed"

    # cancel_stream, on a response another thread of this test waits for (v5 parses only JSON bodies)
    answers: list[Any] = []
    waiting = threading.Thread(
        target=lambda: answers.append(v5(h).responses.create_response(inputs=[LONG], thread_id=thread.id))
    )
    waiting.start()
    h.sim.wait_for(lambda records: len(records) == 2 and records[-1]["tokens_generated"] > 2)
    cancelled = client.responses.cancel_stream(thread.id)
    assert cancelled.cancel_mode == "keep_partial" and cancelled.partial_content_saved is True
    waiting.join(30)
    assert answers[0]["status"] == "cancelled"

    messages = client.messages.get_thread_messages(thread.id)
    assert [m.role for m in messages.data] == ["user", "assistant", "user", "assistant"]
    assert client.messages.update_message(thread.id, messages.data[0].id, content="edited").content == "edited"
    assert client.messages.delete_message(thread.id, messages.data[-1].id).deleted is True
    assert client.threads.list_threads().data[0].id == thread.id
    client.threads.delete_thread(thread.id)
    client.threads.create_thread(organization_id="org_local")
    assert client.threads.delete_all_threads().deleted == 1
    assert client.threads.list_threads().data == []


async def test_every_async_method(harness: Harness) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = AsyncAitronos(api_key=KEY, base_url=harness.url, httpx_client=http)
        assert (await client.responses.get_output_modes()).output_modes
        assert (await client.responses.get_reasoning_levels()).reasoning_levels
        thread = await client.threads.create_thread(organization_id="org_local", title="async")
        assert (await client.threads.get_thread(thread.id)).title == "async"
        assert (await client.threads.update_thread(thread.id, title="renamed")).title == "renamed"
        assert (await client.threads.pin_thread(thread.id)).is_pinned is True
        assert (await client.threads.unpin_thread(thread.id)).is_pinned is False
        body = await client.responses.create_response(
            inputs=[{"role": "user", "content": "hi [tokens=3]"}], thread_id=thread.id
        )
        assert body["status"] == "completed"
        messages = await client.messages.get_thread_messages(thread.id)
        assert len(messages.data) == 2
        assert (await client.messages.update_message(thread.id, messages.data[0].id, content="e")).content == "e"
        assert (await client.messages.delete_message(thread.id, messages.data[1].id)).deleted is True
        assert (await client.threads.list_threads()).data[0].id == thread.id
        await client.threads.delete_thread(thread.id)
        await client.threads.create_thread(organization_id="org_local")
        assert (await client.threads.delete_all_threads()).deleted == 1
