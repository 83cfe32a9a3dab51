"""Threads and messages through the app in process (httpx.ASGITransport): no uvicorn, no LM Studio."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from proxy.render import blocks
from proxy.store import Usage

from .support import KEY, OTHER_KEY, OTHER_OWNER, OWNER, InProcess, make_config

THREAD_FIELDS = {
    "id",
    "object",
    "created_at",
    "updated_at",
    "organization_id",
    "message_count",
    "last_message_at",
    "title",
    "metadata",
    "assistant_id",
    "status",
    "visible_in_ui",
    "last_model_used",
    "is_pinned",
    "pinned_at",
}
MESSAGE_FIELDS = {"id", "object", "created_at", "thread_id", "role", "content", "metadata", "response_blocks"}


def seed_conversation(api: InProcess, owner: str = OWNER, answer: str = "# Hi\n\n**bold** answer") -> str:
    """A thread with a user question and an assistant answer, as a finished response leaves it."""
    tid, rid, _, _ = api.store.begin_response(owner, "", "model-x", [("user", "question")], None)
    api.store.finish_response(rid, status="completed", usage=Usage(), duration=0.1, text=answer)
    return tid


async def test_thread_lifecycle(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/threads", json={"title": "First", "metadata": {"k": "v"}})
    assert created.status_code == 201
    thread = created.json()
    assert set(thread) == THREAD_FIELDS
    assert thread["id"].startswith("thrd_") and thread["object"] == "thread" and thread["status"] == "inactive"
    assert thread["title"] == "First" and thread["metadata"] == {"k": "v"} and thread["organization_id"] == "org_local"
    assert thread["message_count"] == 0 and thread["visible_in_ui"] is True and thread["is_pinned"] is False
    assert thread["created_at"].endswith("Z")

    got = await client.get(f"/v1/threads/{thread['id']}")
    assert got.status_code == 200 and got.json() == thread

    patched = await client.patch(
        f"/v1/threads/{thread['id']}", json={"title": "Renamed", "metadata": {"n": 1}, "visible_in_ui": False}
    )
    assert patched.status_code == 200
    body = patched.json()
    assert (body["title"], body["metadata"], body["visible_in_ui"]) == ("Renamed", {"n": 1}, False)
    assert body["updated_at"] >= thread["updated_at"] and body["created_at"] == thread["created_at"]
    unchanged = await client.patch(f"/v1/threads/{thread['id']}", json={})
    assert unchanged.status_code == 200 and unchanged.json()["title"] == "Renamed"
    cleared = await client.patch(f"/v1/threads/{thread['id']}", json={"title": None})
    assert cleared.json()["title"] is None

    deleted = await client.delete(f"/v1/threads/{thread['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await client.get(f"/v1/threads/{thread['id']}")).status_code == 404
    assert (await client.delete(f"/v1/threads/{thread['id']}")).status_code == 404


async def test_create_thread_with_no_body_and_an_organization(client: httpx.AsyncClient) -> None:
    bare = await client.post("/v1/threads")
    assert bare.status_code == 201 and bare.json()["organization_id"] == "org_local"
    camel = await client.post("/v1/threads", json={"organizationId": "org_9", "assistant_id": "asst_1"})
    assert camel.json()["organization_id"] == "org_9" and camel.json()["assistant_id"] == "asst_1"


async def test_pin_and_unpin(client: httpx.AsyncClient) -> None:
    tid = (await client.post("/v1/threads", json={})).json()["id"]
    pinned = await client.post(f"/v1/threads/{tid}/pin")
    assert pinned.status_code == 200
    body = pinned.json()
    assert body["id"] == tid and body["is_pinned"] is True and body["pinned_at"] and body["message"] == "Thread pinned"
    again = (await client.post(f"/v1/threads/{tid}/pin")).json()
    assert again["pinned_at"] == body["pinned_at"]  # pinning twice keeps the first time
    thread = (await client.get(f"/v1/threads/{tid}")).json()
    assert thread["is_pinned"] is True and thread["pinned_at"] == body["pinned_at"]
    unpinned = (await client.post(f"/v1/threads/{tid}/unpin")).json()
    assert unpinned == {"id": tid, "is_pinned": False, "pinned_at": None, "message": "Thread unpinned"}
    thread = (await client.get(f"/v1/threads/{tid}")).json()
    assert thread["is_pinned"] is False and thread["pinned_at"] is None


async def test_list_threads_pages_filters_and_total(client: httpx.AsyncClient) -> None:
    made = [(await client.post("/v1/threads", json={"title": str(i)})).json()["id"] for i in range(5)]
    await client.post(f"/v1/threads/{made[1]}/pin")
    first = (await client.get("/v1/threads", params={"limit": 2})).json()
    assert first["object"] == "list" and first["limit"] == 2 and first["has_more"] is True
    assert [t["id"] for t in first["data"]] == [made[4], made[3]]  # newest first by default
    assert (first["first_id"], first["last_id"]) == (made[4], made[3]) and "total" not in first
    walked = [t["id"] for t in first["data"]]
    page = first
    while page["has_more"]:
        page = (await client.get("/v1/threads", params={"limit": 2, "after": page["last_id"]})).json()
        walked += [t["id"] for t in page["data"]]
    assert walked == made[::-1]

    asc = (await client.get("/v1/threads", params={"order": "asc", "limit": 5})).json()
    assert [t["id"] for t in asc["data"]] == made and asc["has_more"] is False
    before = (await client.get("/v1/threads", params={"order": "asc", "before": made[3], "limit": 2})).json()
    assert [t["id"] for t in before["data"]] == [made[1], made[2]] and before["has_more"] is True
    end = (await client.get("/v1/threads", params={"after": made[0]})).json()
    assert end["data"] == [] and end["first_id"] is None and end["last_id"] is None and end["has_more"] is False

    pinned = (await client.get("/v1/threads", params={"is_pinned": "true", "include_total": "true"})).json()
    assert [t["id"] for t in pinned["data"]] == [made[1]] and pinned["total"] == 1
    total = (await client.get("/v1/threads", params={"include_total": "1", "limit": 1})).json()
    assert total["total"] == 5 and len(total["data"]) == 1


async def test_delete_all_threads(api: InProcess) -> None:
    mine, theirs = api.client(KEY), api.client(OTHER_KEY)
    for org in ("org_a", "org_a", "org_b"):
        await mine.post("/v1/threads", json={"organization_id": org})
    kept = (await theirs.post("/v1/threads", json={"organization_id": "org_a"})).json()["id"]
    one_org = await mine.delete("/v1/threads", params={"organization_id": "org_a"})
    assert one_org.json() == {"deleted": 2, "message": "Deleted 2 thread(s)"}
    assert (await mine.delete("/v1/threads")).json()["deleted"] == 1
    assert (await mine.get("/v1/threads")).json()["data"] == []
    assert (await theirs.get(f"/v1/threads/{kept}")).status_code == 200


async def test_messages_list_update_delete(api: InProcess, client: httpx.AsyncClient) -> None:
    tid = seed_conversation(api)
    listed = (await client.get(f"/v1/threads/{tid}/messages")).json()
    assert listed["object"] == "list" and listed["has_more"] is False
    user, assistant = listed["data"]
    assert set(user) == MESSAGE_FIELDS and user["object"] == "thread.message" and user["thread_id"] == tid
    assert (user["role"], user["content"]) == ("user", "question")
    assert (assistant["role"], assistant["content"]) == ("assistant", "# Hi\n\n**bold** answer")
    assert (listed["first_id"], listed["last_id"]) == (user["id"], assistant["id"])
    thread = (await client.get(f"/v1/threads/{tid}")).json()
    assert thread["message_count"] == 2 and thread["last_model_used"] == "model-x" and thread["last_message_at"]

    updated = await client.patch(f"/v1/threads/{tid}/messages/{user['id']}", json={"content": "edited"})
    assert updated.status_code == 200
    assert updated.json()["content"] == "edited" and updated.json()["updated_at"] and updated.json()["id"] == user["id"]
    meta = await client.patch(f"/v1/threads/{tid}/messages/{user['id']}", json={"metadata": {"pinned": True}})
    assert meta.json()["content"] == "edited" and meta.json()["metadata"] == {"pinned": True}

    deleted = await client.delete(f"/v1/threads/{tid}/messages/{assistant['id']}")
    assert deleted.json() == {"id": assistant["id"], "deleted": True, "object": "thread.message.deleted"}
    remaining = (await client.get(f"/v1/threads/{tid}/messages")).json()["data"]
    assert [m["id"] for m in remaining] == [user["id"]] and remaining[0]["content"] == "edited"
    assert (await client.delete(f"/v1/threads/{tid}/messages/{assistant['id']}")).status_code == 404


@pytest.mark.parametrize("mode", ["plain", "structured", "blocks", "text"])
async def test_messages_in_each_output_mode(api: InProcess, client: httpx.AsyncClient, mode: str) -> None:
    answer = "# Hi\n\n**bold** answer"
    tid = seed_conversation(api, answer=answer)
    user, assistant = (await client.get(f"/v1/threads/{tid}/messages", params={"output_mode": mode})).json()["data"]
    assert user["content"] == "question" and user["response_blocks"] is None  # only answers are rendered
    expected: dict[str, tuple[str, Any]] = {
        "plain": ("Hi\n\nbold answer", None),
        "structured": (answer, blocks(answer)),
        "blocks": (answer, blocks(answer)),
        "text": (answer, None),
    }
    assert (assistant["content"], assistant["response_blocks"]) == expected[mode]


async def test_message_pages(api: InProcess, client: httpx.AsyncClient) -> None:
    tid = api.store.create_thread(OWNER)["id"]
    other = api.store.create_thread(OWNER)["id"]
    made = [api.store.add_message(tid, "user", str(i)) for i in range(5)]
    foreign = api.store.add_message(other, "user", "elsewhere")
    path = f"/v1/threads/{tid}/messages"
    page = (await client.get(path, params={"limit": 2})).json()
    assert [m["id"] for m in page["data"]] == made[:2] and page["has_more"] is True
    page = (await client.get(path, params={"limit": 2, "after": made[1]})).json()
    assert [m["id"] for m in page["data"]] == made[2:4] and page["has_more"] is True
    page = (await client.get(path, params={"limit": 2, "after": made[3]})).json()
    assert [m["id"] for m in page["data"]] == [made[4]] and page["has_more"] is False
    desc = (await client.get(path, params={"order": "desc", "limit": 5})).json()
    assert [m["id"] for m in desc["data"]] == made[::-1] and desc["has_more"] is False
    before = (await client.get(path, params={"before": made[4], "limit": 2})).json()
    assert [m["id"] for m in before["data"]] == made[2:4] and before["has_more"] is True
    # A cursor must be a message of this thread.
    for cursor in (foreign, "msg_nope"):
        for name in ("after", "before"):
            response = await client.get(path, params={name: cursor})
            assert response.status_code == 404 and response.json()["error"]["code"] == "RESOURCE_NOT_FOUND"


async def test_message_of_another_thread_is_not_found(api: InProcess, client: httpx.AsyncClient) -> None:
    tid, other = seed_conversation(api), seed_conversation(api)
    foreign = (await client.get(f"/v1/threads/{other}/messages")).json()["data"][0]["id"]
    before = api.dump()
    for method in ("PATCH", "DELETE"):
        response = await client.request(
            method, f"/v1/threads/{tid}/messages/{foreign}", json={"content": "x"} if method == "PATCH" else None
        )
        assert response.status_code == 404, response.text
    assert api.dump() == before


# -- ownership and auth --------------------------------------------------------------------


async def test_another_key_is_refused_and_sees_nothing(api: InProcess) -> None:
    tid = seed_conversation(api)
    mine, theirs = api.client(KEY), api.client(OTHER_KEY)
    mid = (await mine.get(f"/v1/threads/{tid}/messages")).json()["data"][0]["id"]
    before = api.dump()
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", f"/v1/threads/{tid}", None),
        ("PATCH", f"/v1/threads/{tid}", {"title": "stolen"}),
        ("DELETE", f"/v1/threads/{tid}", None),
        ("POST", f"/v1/threads/{tid}/pin", None),
        ("POST", f"/v1/threads/{tid}/unpin", None),
        ("GET", f"/v1/threads/{tid}/messages", None),
        ("PATCH", f"/v1/threads/{tid}/messages/{mid}", {"content": "x"}),
        ("DELETE", f"/v1/threads/{tid}/messages/{mid}", None),
        ("POST", f"/v1/model/response/{tid}/cancel", None),
    ]
    for method, path, body in calls:
        response = await theirs.request(method, path, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["code"] == "INSUFFICIENT_PERMISSIONS"
    listed = (await theirs.get("/v1/threads", params={"include_total": "true"})).json()
    assert listed["data"] == [] and listed["total"] == 0
    cursor = await theirs.get("/v1/threads", params={"after": tid})
    assert cursor.status_code == 404  # a cursor is never a way to learn another key's thread exists
    assert tid not in cursor.text.replace(f"Cursor {tid} not found", "")
    assert (await theirs.delete("/v1/threads")).json()["deleted"] == 0
    assert (await theirs.get("/v1/usage")).json()["data"] == []
    assert api.dump() == before


async def test_usage_is_per_key_and_outlives_the_thread(api: InProcess) -> None:
    tid = seed_conversation(api)
    seed_conversation(api, owner=OTHER_OWNER)
    mine = api.client(KEY)
    usage = (await mine.get("/v1/usage")).json()
    assert usage["object"] == "list" and usage["has_more"] is False
    (row,) = usage["data"]
    assert row["thread_id"] == tid and row["status"] == "completed" and row["model"] == "model-x"
    assert (await mine.delete(f"/v1/threads/{tid}")).status_code == 204
    assert (await mine.get("/v1/usage", params={"thread_id": tid})).json()["data"] == [row]


async def test_cancel_without_a_stream_is_404(api: InProcess, client: httpx.AsyncClient) -> None:
    tid = seed_conversation(api)
    for thread_id in (tid, "thrd_unknown"):
        response = await client.post(f"/v1/model/response/{thread_id}/cancel")
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "No active stream found for this thread"
    active = (await client.get("/v1/model/response/active")).json()
    assert active == {"object": "list", "data": []}


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEY},
        {"x-api-key": KEY},
        {"X-API-KEY": KEY},
        {"api-key": KEY},
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"bearer {KEY}"},
    ],
    ids=["X-API-Key", "lower", "upper", "api-key", "bearer", "bearer-lower"],
)
async def test_configured_key_is_accepted_wherever_it_comes(make_api: Any, headers: dict[str, str]) -> None:
    api: InProcess = make_api(make_config(auth={"api_keys": [KEY]}))
    client = api.client(None)
    response = await client.get("/v1/threads", headers=headers)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": ""}, {"X-API-Key": "   "}, {"X-API-Key": OTHER_KEY}, {"Authorization": f"Basic {KEY}"}],
    ids=["none", "empty", "blank", "unlisted", "not-bearer"],
)
async def test_a_missing_or_unlisted_key_is_401(make_api: Any, headers: dict[str, str]) -> None:
    api: InProcess = make_api(make_config(auth={"api_keys": [KEY]}))
    client = api.client(None)
    before = api.dump()
    for method, path in (("GET", "/v1/threads"), ("POST", "/v1/threads"), ("GET", "/v1/usage")):
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "AUTHENTICATION_REQUIRED" and error["type"] == "authentication_error"
        assert error["trace_id"] == response.headers["x-request-id"]
    assert api.dump() == before


async def test_open_mode_accepts_any_key_and_keeps_keys_apart(api: InProcess) -> None:
    a, b = api.client("any-key-a"), api.client("any-key-b")
    tid = (await a.post("/v1/threads", json={})).json()["id"]
    assert (await b.get(f"/v1/threads/{tid}")).status_code == 403
    assert (await api.client(None).get("/v1/threads")).status_code == 401
    stored = api.store.get_thread(tid)
    assert stored is not None and "any-key-a" not in stored["owner"]  # a hash, never the key
