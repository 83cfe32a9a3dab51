"""Every error, on every kind of endpoint, is the documented envelope; and bad input changes nothing."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from support import KEY, OTHER_KEY, Harness, make_config, read_events

Case = Callable[[Harness, httpx.Client], tuple[str, str, dict[str, Any]]]


def _thread(h: Harness, key: str = KEY) -> str:
    with h.client(key) as client:
        response = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "x [tokens=1]"}]})
        thread_id: str = response.json()["thread_id"]
        return thread_id


def _message(h: Harness) -> tuple[str, str]:
    thread_id = _thread(h)
    with h.client() as client:
        return thread_id, client.get(f"/v1/threads/{thread_id}/messages").json()["data"][0]["id"]


CASES: dict[str, tuple[int, str, Case]] = {
    "create-not-json": (400, "INVALID_REQUEST", lambda h, c: ("POST", "/v1/model/response", {"content": b"{nope"})),
    "create-not-object": (400, "INVALID_REQUEST", lambda h, c: ("POST", "/v1/model/response", {"json": [1, 2]})),
    "patch-thread-not-json": (
        400,
        "INVALID_REQUEST",
        lambda h, c: ("PATCH", f"/v1/threads/{_thread(h)}", {"content": b"nope"}),
    ),
    "no-key-create": (401, "AUTHENTICATION_REQUIRED", lambda h, c: ("POST", "/v1/model/response", {"no_key": True})),
    "no-key-threads": (401, "AUTHENTICATION_REQUIRED", lambda h, c: ("GET", "/v1/threads", {"no_key": True})),
    "no-key-cancel": (
        401,
        "AUTHENTICATION_REQUIRED",
        lambda h, c: ("POST", "/v1/model/response/thrd_x/cancel", {"no_key": True}),
    ),
    "no-key-usage": (401, "AUTHENTICATION_REQUIRED", lambda h, c: ("GET", "/v1/usage", {"no_key": True})),
    "other-key-get": (
        403,
        "INSUFFICIENT_PERMISSIONS",
        lambda h, c: ("GET", f"/v1/threads/{_thread(h, OTHER_KEY)}", {}),
    ),
    "other-key-delete": (
        403,
        "INSUFFICIENT_PERMISSIONS",
        lambda h, c: ("DELETE", f"/v1/threads/{_thread(h, OTHER_KEY)}", {}),
    ),
    "other-key-messages": (
        403,
        "INSUFFICIENT_PERMISSIONS",
        lambda h, c: ("GET", f"/v1/threads/{_thread(h, OTHER_KEY)}/messages", {}),
    ),
    "other-key-cancel": (
        403,
        "INSUFFICIENT_PERMISSIONS",
        lambda h, c: ("POST", f"/v1/model/response/{_thread(h, OTHER_KEY)}/cancel", {}),
    ),
    "other-key-continue": (
        403,
        "INSUFFICIENT_PERMISSIONS",
        lambda h, c: (
            "POST",
            "/v1/model/response",
            {"json": {"thread_id": _thread(h, OTHER_KEY), "inputs": [{"role": "user", "content": "x"}]}},
        ),
    ),
    "unknown-thread": (404, "RESOURCE_NOT_FOUND", lambda h, c: ("GET", "/v1/threads/thrd_nope", {})),
    "unknown-message": (
        404,
        "RESOURCE_NOT_FOUND",
        lambda h, c: ("DELETE", f"/v1/threads/{_thread(h)}/messages/msg_nope", {}),
    ),
    "unknown-model": (
        404,
        "RESOURCE_NOT_FOUND",
        lambda h, c: (
            "POST",
            "/v1/model/response",
            {"json": {"model": "nope", "inputs": [{"role": "user", "content": "x"}]}},
        ),
    ),
    "no-active-stream": (
        404,
        "RESOURCE_NOT_FOUND",
        lambda h, c: ("POST", f"/v1/model/response/{_thread(h)}/cancel", {}),
    ),
    "unknown-route": (404, "RESOURCE_NOT_FOUND", lambda h, c: ("GET", "/v1/nothing-here", {})),
    "wrong-method-threads": (405, "METHOD_NOT_ALLOWED", lambda h, c: ("PUT", "/v1/threads", {})),
    "wrong-method-create": (405, "METHOD_NOT_ALLOWED", lambda h, c: ("GET", "/v1/model/response", {})),
    "too-large": (413, "PAYLOAD_TOO_LARGE", lambda h, c: ("POST", "/v1/model/response", {"content": b"x" * 5000})),
    "too-large-thread": (413, "PAYLOAD_TOO_LARGE", lambda h, c: ("POST", "/v1/threads", {"content": b" " * 5000})),
    "missing-inputs": (
        422,
        "VALIDATION_ERROR",
        lambda h, c: ("POST", "/v1/model/response", {"json": {"stream": True}}),
    ),
    "bad-temperature": (
        422,
        "VALIDATION_ERROR",
        lambda h, c: (
            "POST",
            "/v1/model/response",
            {"json": {"temperature": "hot", "inputs": [{"role": "user", "content": "x"}]}},
        ),
    ),
    "bad-limit": (422, "VALIDATION_ERROR", lambda h, c: ("GET", "/v1/threads?limit=0", {})),
    "bad-message-update": (
        422,
        "VALIDATION_ERROR",
        lambda h, c: ("PATCH", "/v1/threads/{}/messages/{}".format(*_message(h)), {"json": {"content": 5}}),
    ),
}


def _dump(h: Harness) -> list[str]:
    with sqlite3.connect(h.db) as db:
        return list(db.iterdump())


def _assert_envelope(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error"} and body["success"] is False
    error = body["error"]
    assert set(error) == {"code", "message", "system_message", "type", "status", "details", "trace_id", "timestamp"}
    assert error["code"] == code and error["status"] == status and error["message"] == error["system_message"]
    expected_type = {401: "authentication_error", 403: "authorization_error"}.get(
        status, "server_error" if status >= 500 else "client_error"
    )
    assert error["type"] == expected_type
    assert error["trace_id"] == response.headers["x-request-id"] and error["trace_id"].startswith("req_")
    assert error["timestamp"].endswith("Z") and error["message"]
    if status == 422:
        assert error["details"]["errors"] and all("field" in e for e in error["details"]["errors"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_error_envelope(make_harness: Any, name: str) -> None:
    status, code, case = CASES[name]
    h: Harness = make_harness(make_config(limits={"max_body_bytes": 4096}))
    with h.client() as client:
        method, path, options = case(h, client)
        headers = {} if options.pop("no_key", False) else {"X-API-Key": KEY}
        before = _dump(h)
        response = httpx.request(method, h.url + path, headers=headers, timeout=30, **options)
        _assert_envelope(response, status, code)
        assert _dump(h) == before, "a rejected request changed the store"


def test_409_stream_already_active_changes_nothing(make_harness: Any) -> None:
    h: Harness = make_harness()
    h.sim.set_faults("simulated-reasoner", stall=True)
    with h.client() as client:
        body = {"model": "simulated-reasoner", "inputs": [{"role": "user", "content": "stall"}], "stream": True}
        with client.stream("POST", "/v1/model/response", json=body) as response:
            events = read_events(response)
            created = next(e for e in events if isinstance(e, dict) and e["event"] == "response.created")
            thread_id = created["thread_id"]
            before = _dump(h)
            again = client.post(
                "/v1/model/response", json={"thread_id": thread_id, "inputs": [{"role": "user", "content": "2nd"}]}
            )
            _assert_envelope(again, 409, "STREAM_ALREADY_ACTIVE")
            assert _dump(h) == before
            assert client.post(f"/v1/model/response/{thread_id}/cancel").status_code == 200


def test_503_when_lmstudio_is_unreachable(make_harness: Any, free_port: Any, tmp_path: Any) -> None:
    from proxy.background import BackgroundServer

    server = BackgroundServer(make_config(), lmstudio_host=f"127.0.0.1:{free_port()}", database=tmp_path / "d.db")
    with server:
        for method, path in (("POST", "/v1/model/response"), ("GET", "/v1/models")):
            response = httpx.request(
                method,
                server.base_url + path,
                headers={"X-API-Key": KEY},
                timeout=30,
                json={"inputs": [{"role": "user", "content": "x"}]} if method == "POST" else None,
            )
            _assert_envelope(response, 503, "MODEL_BACKEND_UNAVAILABLE")
