"""Two API keys: neither can see, read, change or delete the other's threads, and lists show one's own."""

from __future__ import annotations

from typing import Any

from support import KEY, OTHER_KEY, Harness, StreamReader, assert_consistent


def _setup(h: Harness) -> tuple[str, str]:
    with h.client(KEY) as client:
        body = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "mine [tokens=3]"}]})
        thread_id = body.json()["thread_id"]
        message_id = client.get(f"/v1/threads/{thread_id}/messages").json()["data"][0]["id"]
    return thread_id, message_id


def test_other_key_is_refused_everywhere(harness: Harness) -> None:
    thread_id, message_id = _setup(harness)
    before: dict[str, Any]
    with harness.client(KEY) as owner:
        before = owner.get(f"/v1/threads/{thread_id}").json()
        before_messages = owner.get(f"/v1/threads/{thread_id}/messages").json()
    calls = [
        ("GET", f"/v1/threads/{thread_id}", None),
        ("PATCH", f"/v1/threads/{thread_id}", {"title": "stolen"}),
        ("DELETE", f"/v1/threads/{thread_id}", None),
        ("POST", f"/v1/threads/{thread_id}/pin", None),
        ("POST", f"/v1/threads/{thread_id}/unpin", None),
        ("GET", f"/v1/threads/{thread_id}/messages", None),
        ("PATCH", f"/v1/threads/{thread_id}/messages/{message_id}", {"content": "x"}),
        ("DELETE", f"/v1/threads/{thread_id}/messages/{message_id}", None),
        ("POST", f"/v1/model/response/{thread_id}/cancel", None),
        ("POST", "/v1/model/response", {"thread_id": thread_id, "inputs": [{"role": "user", "content": "x"}]}),
    ]
    with harness.client(OTHER_KEY) as other:
        for method, path, body in calls:
            response = other.request(method, path, json=body)
            assert response.status_code == 403, (method, path, response.text)
            assert response.json()["error"]["code"] == "INSUFFICIENT_PERMISSIONS"
            assert thread_id not in response.text.replace(path, "")  # says nothing about the thread
        assert other.get("/v1/threads").json()["data"] == []
        assert other.get("/v1/threads", params={"after": thread_id}).status_code == 404
        assert other.get("/v1/usage").json()["data"] == []
        assert other.get("/v1/usage", params={"thread_id": thread_id}).json()["data"] == []
        assert other.delete("/v1/threads").json()["deleted"] == 0
    with harness.client(KEY) as owner:
        assert owner.get(f"/v1/threads/{thread_id}").json() == before
        assert owner.get(f"/v1/threads/{thread_id}/messages").json() == before_messages
        assert [t["id"] for t in owner.get("/v1/threads").json()["data"]] == [thread_id]


def test_active_streams_are_private(make_harness: Any) -> None:
    h: Harness = make_harness(tokens_per_second=40.0)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": "long [tokens=400]"}]}, key=OTHER_KEY)
    reader.wait_deltas(1)
    with h.client(KEY) as mine:
        assert mine.get("/v1/model/response/active").json()["data"] == []
        assert mine.get("/v1/threads").json()["data"] == []
        assert mine.get(f"/v1/threads/{reader.thread_id}").status_code == 403
    with h.client(OTHER_KEY) as theirs:
        assert theirs.post(f"/v1/model/response/{reader.thread_id}/cancel").status_code == 200
    reader.join()
    assert_consistent(h)
