"""Every error is the documented envelope, validation lists every bad field, and a rejected request stores nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.store import Usage

from .support import OTHER_OWNER, OWNER, InProcess, make_config

LIMIT = 4096
ENVELOPE_FIELDS = {"code", "message", "system_message", "type", "status", "details", "trace_id", "timestamp"}


@dataclass
class Seeded:
    """What each case may point at: one thread of ours with a message, one of another key."""

    thread: str
    message: str
    theirs: str
    their_message: str


def _seed(api: InProcess) -> Seeded:
    def conversation(owner: str) -> tuple[str, str]:
        tid, rid, (mid,), _ = api.store.begin_response(owner, "", "m", [("user", "q")], None)
        api.store.finish_response(rid, status="completed", usage=Usage(), duration=0.1, text="a")
        return tid, mid

    mine, theirs = conversation(OWNER), conversation(OTHER_OWNER)
    return Seeded(*mine, *theirs)


@dataclass
class Case:
    status: int
    code: str
    method: str
    path: Callable[[Seeded], str]
    options: dict[str, Any] = field(default_factory=dict)
    key: bool = True


USER = [{"role": "user", "content": "x"}]

CASES: dict[str, Case] = {
    "create-not-json": Case(400, "INVALID_REQUEST", "POST", lambda s: "/v1/model/response", {"content": b"{nope"}),
    "create-not-object": Case(400, "INVALID_REQUEST", "POST", lambda s: "/v1/model/response", {"json": [1, 2]}),
    "create-empty-body": Case(400, "INVALID_REQUEST", "POST", lambda s: "/v1/model/response", {"content": b""}),
    "create-lone-surrogate": Case(
        400, "INVALID_REQUEST", "POST", lambda s: "/v1/model/response", {"content": b'{"inputs": "\\ud800"}'}
    ),
    "thread-not-json": Case(400, "INVALID_REQUEST", "POST", lambda s: "/v1/threads", {"content": b"nope"}),
    "patch-thread-not-object": Case(
        400, "INVALID_REQUEST", "PATCH", lambda s: f"/v1/threads/{s.thread}", {"content": b'"title"'}
    ),
    "patch-message-not-json": Case(
        400, "INVALID_REQUEST", "PATCH", lambda s: f"/v1/threads/{s.thread}/messages/{s.message}", {"content": b"{"}
    ),
    "no-key-create": Case(401, "AUTHENTICATION_REQUIRED", "POST", lambda s: "/v1/model/response", {"json": {}}, False),
    "no-key-threads": Case(401, "AUTHENTICATION_REQUIRED", "GET", lambda s: "/v1/threads", key=False),
    "no-key-new-thread": Case(401, "AUTHENTICATION_REQUIRED", "POST", lambda s: "/v1/threads", key=False),
    "no-key-delete-all": Case(401, "AUTHENTICATION_REQUIRED", "DELETE", lambda s: "/v1/threads", key=False),
    "no-key-thread": Case(401, "AUTHENTICATION_REQUIRED", "DELETE", lambda s: f"/v1/threads/{s.thread}", key=False),
    "no-key-cancel": Case(
        401, "AUTHENTICATION_REQUIRED", "POST", lambda s: f"/v1/model/response/{s.thread}/cancel", key=False
    ),
    "no-key-usage": Case(401, "AUTHENTICATION_REQUIRED", "GET", lambda s: "/v1/usage", key=False),
    "no-key-active": Case(401, "AUTHENTICATION_REQUIRED", "GET", lambda s: "/v1/model/response/active", key=False),
    "no-key-output-modes": Case(
        401, "AUTHENTICATION_REQUIRED", "GET", lambda s: "/v1/model/response/output-modes", key=False
    ),
    "other-key-get": Case(403, "INSUFFICIENT_PERMISSIONS", "GET", lambda s: f"/v1/threads/{s.theirs}"),
    "other-key-patch": Case(
        403, "INSUFFICIENT_PERMISSIONS", "PATCH", lambda s: f"/v1/threads/{s.theirs}", {"json": {"title": "x"}}
    ),
    "other-key-delete": Case(403, "INSUFFICIENT_PERMISSIONS", "DELETE", lambda s: f"/v1/threads/{s.theirs}"),
    "other-key-pin": Case(403, "INSUFFICIENT_PERMISSIONS", "POST", lambda s: f"/v1/threads/{s.theirs}/pin"),
    "other-key-messages": Case(403, "INSUFFICIENT_PERMISSIONS", "GET", lambda s: f"/v1/threads/{s.theirs}/messages"),
    "other-key-delete-message": Case(
        403, "INSUFFICIENT_PERMISSIONS", "DELETE", lambda s: f"/v1/threads/{s.theirs}/messages/{s.their_message}"
    ),
    "other-key-cancel": Case(
        403, "INSUFFICIENT_PERMISSIONS", "POST", lambda s: f"/v1/model/response/{s.theirs}/cancel"
    ),
    "unknown-thread": Case(404, "RESOURCE_NOT_FOUND", "GET", lambda s: "/v1/threads/thrd_nope"),
    "unknown-thread-patch": Case(
        404, "RESOURCE_NOT_FOUND", "PATCH", lambda s: "/v1/threads/thrd_nope", {"json": {"title": "x"}}
    ),
    "unknown-thread-pin": Case(404, "RESOURCE_NOT_FOUND", "POST", lambda s: "/v1/threads/thrd_nope/pin"),
    "unknown-message": Case(404, "RESOURCE_NOT_FOUND", "DELETE", lambda s: f"/v1/threads/{s.thread}/messages/msg_nope"),
    "unknown-cursor": Case(404, "RESOURCE_NOT_FOUND", "GET", lambda s: "/v1/threads?before=thrd_nope"),
    "other-key-cursor": Case(404, "RESOURCE_NOT_FOUND", "GET", lambda s: f"/v1/threads?after={s.theirs}"),
    "no-active-stream": Case(404, "RESOURCE_NOT_FOUND", "POST", lambda s: f"/v1/model/response/{s.thread}/cancel"),
    "unknown-route": Case(404, "RESOURCE_NOT_FOUND", "GET", lambda s: "/v1/nothing-here"),
    "unknown-route-no-key": Case(404, "RESOURCE_NOT_FOUND", "POST", lambda s: "/v1/threads/a/b/c", key=False),
    "wrong-method-threads": Case(405, "METHOD_NOT_ALLOWED", "PUT", lambda s: "/v1/threads"),
    "wrong-method-create": Case(405, "METHOD_NOT_ALLOWED", "GET", lambda s: "/v1/model/response"),
    "wrong-method-pin": Case(405, "METHOD_NOT_ALLOWED", "DELETE", lambda s: f"/v1/threads/{s.thread}/pin"),
    "wrong-method-message": Case(
        405, "METHOD_NOT_ALLOWED", "GET", lambda s: f"/v1/threads/{s.thread}/messages/{s.message}"
    ),
    "too-large": Case(413, "PAYLOAD_TOO_LARGE", "POST", lambda s: "/v1/model/response", {"content": b"x" * 5000}),
    "too-large-thread": Case(413, "PAYLOAD_TOO_LARGE", "POST", lambda s: "/v1/threads", {"content": b" " * 5000}),
    "too-large-unannounced": Case(
        413, "PAYLOAD_TOO_LARGE", "PATCH", lambda s: f"/v1/threads/{s.thread}", {"chunks": [b" " * 3000] * 2}
    ),
    "missing-inputs": Case(422, "VALIDATION_ERROR", "POST", lambda s: "/v1/model/response", {"json": {"stream": True}}),
    "bad-temperature": Case(
        422,
        "VALIDATION_ERROR",
        "POST",
        lambda s: "/v1/model/response",
        {"json": {"temperature": "hot", "inputs": USER}},
    ),
    "no-user-input": Case(
        422,
        "VALIDATION_ERROR",
        "POST",
        lambda s: "/v1/model/response",
        {"json": {"inputs": [{"role": "system", "content": "x"}]}},
    ),
    "bad-limit": Case(422, "VALIDATION_ERROR", "GET", lambda s: "/v1/threads?limit=0"),
    "bad-bool-param": Case(422, "VALIDATION_ERROR", "GET", lambda s: "/v1/threads?is_pinned=maybe"),
    "bad-usage-limit": Case(422, "VALIDATION_ERROR", "GET", lambda s: "/v1/usage?limit=5000"),
    "bad-messages-order": Case(422, "VALIDATION_ERROR", "GET", lambda s: f"/v1/threads/{s.thread}/messages?order=up"),
    "bad-thread-update": Case(
        422, "VALIDATION_ERROR", "PATCH", lambda s: f"/v1/threads/{s.thread}", {"json": {"title": "ok", "metadata": 1}}
    ),
    "bad-new-thread": Case(422, "VALIDATION_ERROR", "POST", lambda s: "/v1/threads", {"json": {"visible_in_ui": "y"}}),
    "bad-message-update": Case(
        422,
        "VALIDATION_ERROR",
        "PATCH",
        lambda s: f"/v1/threads/{s.thread}/messages/{s.message}",
        {"json": {"content": 5}},
    ),
}


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "error"} and body["success"] is False
    error: dict[str, Any] = body["error"]
    assert set(error) == ENVELOPE_FIELDS
    assert error["code"] == code and error["status"] == status
    assert error["message"] and error["message"] == error["system_message"]
    expected_type = {401: "authentication_error", 403: "authorization_error"}.get(
        status, "server_error" if status >= 500 else "client_error"
    )
    assert error["type"] == expected_type
    assert isinstance(error["details"], dict)
    assert error["trace_id"].startswith("req_") and error["trace_id"] == response.headers["x-request-id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", error["timestamp"]), error["timestamp"]
    assert response.headers["content-type"] == "application/json"
    if status == 422:
        errors = error["details"]["errors"]
        assert errors and all(set(e) == {"field", "message"} and e["field"] and e["message"] for e in errors)
    return error


async def _chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize("name", sorted(CASES))
async def test_error_envelope_and_nothing_stored(make_api: Any, name: str) -> None:
    case = CASES[name]
    api: InProcess = make_api(make_config(limits={"max_body_bytes": LIMIT}))
    seeded = _seed(api)
    client = api.client() if case.key else api.client(None)
    options = dict(case.options)
    if "chunks" in options:  # a body with no Content-Length: the limit applies while it is read
        options["content"] = _chunks(options.pop("chunks"))
    before = api.dump()
    response = await client.request(case.method, case.path(seeded), **options)
    if "chunks" in case.options:
        assert "content-length" not in response.request.headers
    assert_envelope(response, case.status, case.code)
    assert api.dump() == before, "a rejected request changed the database"


async def test_every_response_has_its_own_request_id(client: httpx.AsyncClient) -> None:
    ids = set()
    for path in ("/v1/threads", "/v1/model/response/output-modes", "/v1/model/response/reasoning-levels"):
        response = await client.get(path)
        assert response.status_code == 200 and response.headers["x-request-id"].startswith("req_")
        ids.add(response.headers["x-request-id"])
    created = await client.post("/v1/threads")
    ids.add(created.headers["x-request-id"])
    assert len(ids) == 4


async def test_small_endpoints(client: httpx.AsyncClient) -> None:
    modes = (await client.get("/v1/model/response/output-modes")).json()
    assert modes["success"] is True
    assert [(m["mode"], m["is_default"]) for m in modes["output_modes"]] == [
        ("text", True),
        ("plain", False),
        ("structured", False),
        ("blocks", False),
        ("json", False),
        ("json_schema", False),
    ]
    levels = (await client.get("/v1/model/response/reasoning-levels")).json()
    # Only what really works: LM Studio has no effort control, the model reasons at its own level.
    assert levels["success"] is True and [lv["level"] for lv in levels["reasoning_levels"]] == ["medium"]
    assert all(set(lv) == {"level", "description", "is_default"} for lv in levels["reasoning_levels"])


def _fields(response: httpx.Response) -> set[str]:
    error = assert_envelope(response, 422, "VALIDATION_ERROR")
    return {e["field"] for e in error["details"]["errors"]}


async def test_create_lists_every_invalid_field(api: InProcess, client: httpx.AsyncClient) -> None:
    body = {
        "inputs": [
            {"role": "robot", "content": "x"},
            5,
            {"role": "user", "content": 7},
            {"content": [{"type": "text"}]},
        ],
        "thread_id": 5,
        "model": 1,
        "stream": "yes",
        "instructions": 2,
        "temperature": 3,
        "top_p": "x",
        "max_output_synapses": 0,
        "output_mode": "fancy",
        "organization_id": 3,
        "assistant_id": 4,
        "metadata": [],
        "store": "no",
    }
    before = api.dump()
    response = await client.post("/v1/model/response", json=body)
    assert _fields(response) == {
        "inputs[0].role",
        "inputs[1]",
        "inputs[2].content",
        "inputs[3].content",
        "thread_id",
        "model",
        "stream",
        "instructions",
        "temperature",
        "top_p",
        "max_output_synapses",
        "output_mode",
        "organization_id",
        "assistant_id",
        "metadata",
        "store",
    }
    message = response.json()["error"]["message"]
    assert "temperature" in message and "inputs[0].role" in message  # the summary names them too
    assert api.dump() == before


async def test_create_reports_the_spelling_the_client_used(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/model/response", json={"inputs": USER, "topP": 2, "maxTokens": "many"})
    assert _fields(response) == {"topP", "maxTokens"}


async def test_thread_bodies_list_every_invalid_field(api: InProcess, client: httpx.AsyncClient) -> None:
    bad = {"title": 1, "metadata": [], "visible_in_ui": "y", "assistant_id": []}
    assert _fields(await client.post("/v1/threads", json={**bad, "organization_id": 2})) == {*bad, "organization_id"}
    tid = (await client.post("/v1/threads", json={"title": "kept"})).json()["id"]
    before = api.dump()
    assert _fields(await client.patch(f"/v1/threads/{tid}", json=bad)) == set(bad)
    # Nothing of a rejected update is applied, not even its valid fields.
    assert _fields(await client.patch(f"/v1/threads/{tid}", json={"title": "new", "metadata": 1})) == {"metadata"}
    assert api.dump() == before
    assert (await client.get(f"/v1/threads/{tid}")).json()["title"] == "kept"


async def test_message_update_lists_every_invalid_field(api: InProcess, client: httpx.AsyncClient) -> None:
    seeded = _seed(api)
    path = f"/v1/threads/{seeded.thread}/messages/{seeded.message}"
    assert _fields(await client.patch(path, json={"content": 5, "metadata": []})) == {"content", "metadata"}


@pytest.mark.parametrize("path", ["/v1/threads", "/v1/threads/{thread}/messages"])
async def test_page_parameters_list_every_invalid_field(api: InProcess, client: httpx.AsyncClient, path: str) -> None:
    seeded = _seed(api)
    url = path.format(thread=seeded.thread)
    assert _fields(await client.get(url, params={"limit": "0", "order": "sideways"})) == {"limit", "order"}
    assert _fields(await client.get(url, params={"limit": "101"})) == {"limit"}
    assert _fields(await client.get(url, params={"limit": "ten"})) == {"limit"}
    ok = await client.get(url, params={"limit": "100", "order": "asc"})
    assert ok.status_code == 200


async def test_thread_list_query_lists_every_invalid_field(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/threads", params={"limit": "0", "is_pinned": "maybe", "visible_in_ui": "perhaps"})
    assert _fields(response) == {"limit", "is_pinned", "visible_in_ui"}


async def _boom(request: Request) -> Response:
    raise RuntimeError("a bug in a handler")


async def test_an_unexpected_exception_is_the_500_envelope(make_api: Any, caplog: pytest.LogCaptureFixture) -> None:
    api: InProcess = make_api(make_config(), extra_routes=[Route("/boom", _boom)])
    response = await api.client().get("/boom")
    error = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "a bug in a handler" not in response.text  # the client gets the trace id, the log gets the rest
    assert any(error["trace_id"] in r.getMessage() and r.exc_info for r in caplog.records)


CORS_ORIGIN = "http://ui.example"


async def test_cross_origin_errors_are_readable(make_api: Any) -> None:
    api: InProcess = make_api(make_config(cors={"allow_origins": [CORS_ORIGIN]}))
    client = api.client()
    preflight = await client.options(
        "/v1/threads", headers={"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == CORS_ORIGIN
    # Every method the API serves may come from the browser: assistants are updated with PUT.
    put = await client.options(
        "/v1/assistants/asst_x", headers={"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "PUT"}
    )
    assert put.status_code == 200 and "PUT" in put.headers["access-control-allow-methods"]
    for method, path in (("GET", "/v1/threads"), ("GET", "/v1/threads/thrd_nope"), ("PUT", "/v1/threads")):
        response = await client.request(method, path, headers={"Origin": CORS_ORIGIN})
        assert response.headers["access-control-allow-origin"] == CORS_ORIGIN, (method, path)
        assert "X-Request-Id" in response.headers["access-control-expose-headers"]
    refused = await client.get("/v1/threads", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize("kind", ["413", "500"])
async def test_cross_origin_413_and_500_are_readable(make_api: Any, kind: str) -> None:
    config = make_config(cors={"allow_origins": [CORS_ORIGIN]}, limits={"max_body_bytes": 100})
    api: InProcess = make_api(config, extra_routes=[Route("/boom", _boom)])
    client = api.client()
    if kind == "413":
        response = await client.post("/v1/threads", content=b" " * 200, headers={"Origin": CORS_ORIGIN})
    else:
        response = await client.get("/boom", headers={"Origin": CORS_ORIGIN})
    assert response.status_code == int(kind)
    assert response.headers.get("access-control-allow-origin") == CORS_ORIGIN
