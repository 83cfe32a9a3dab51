"""Fuzz the running proxy with schemathesis, driven by its own OpenAPI document.

Every operation gets a bounded, derandomized batch of generated requests (valid and invalid) against
a real uvicorn server backed by the simulator at full speed. No response may be a 5xx, every error
must be the envelope with the matching status and trace id, bodies must match the document, and a
rejected request must leave the database exactly as it was. Hand-picked hostile bodies that the
schema-driven generator never produces (lone surrogates, deep nesting) follow.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from proxy import sse
from proxy.app import openapi_document
from proxy.background import BackgroundServer

KEY = "test-key-one"
# As tests/conftest.py: tokens as fast as possible, near-instant loads and prompt processing.
FAST = {"tokens_per_second": 0.0, "load_seconds": 0.05, "prompt_seconds": 0.0}
TERMINAL = ("response.completed", "response.error", "response.cancelled")
ERROR_FIELDS = {"code", "message", "system_message", "type", "status", "details", "trace_id", "timestamp"}
STREAM_EVENT = jsonschema.Draft202012Validator(
    {"$ref": "#/components/schemas/StreamEvent", "components": openapi_document()["components"]}
)

# The document the server renders at /openapi.json (test_served_document_is_the_fuzzed_one checks that);
# loading it at import time lets pytest list one test per operation. Streams are read to the end
# (schemathesis stops after 20 events by default, which to the proxy is a client going away). The
# coverage phase is off: it adds ~850 boundary cases (+15 s) and found nothing the fuzzing phase did not.
schema = schemathesis.openapi.from_dict(
    openapi_document(),
    config=schemathesis.config.SchemathesisConfig.from_dict(
        {"max-stream-events": 100_000, "phases": {"coverage": {"enabled": False}}}
    ),
)


class Snapshots:
    """The database as SQL text, re-dumped only when another connection has committed since the last dump.

    `PRAGMA data_version` changes exactly when another connection (the server's) commits, so most
    rejected requests cost one pragma instead of two full dumps.
    """

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, check_same_thread=False)
        self.version = -1
        self.dump: list[str] = []

    def current(self) -> list[str]:
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self.version:
            self.version, self.dump = version, list(self.conn.iterdump())
        return self.dump


class Target:
    """The running proxy and a view of its database."""

    def __init__(self, server: BackgroundServer, db: Path) -> None:
        self.server = server
        self.url = server.base_url
        self.snapshots = Snapshots(db)

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until no stream is registered (a stream still saves after its last frame is sent)."""
        deadline = time.monotonic() + timeout
        while self.server.proxy.registry.streams:
            if time.monotonic() > deadline:
                raise TimeoutError("a stream is still registered")
            time.sleep(0.01)

    def snapshot(self) -> list[str]:
        self.wait_idle()
        return self.snapshots.current()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One proxy + simulator for the module: a server per generated case would cost more than the cases."""
    db = tmp_path_factory.mktemp("fuzz") / "proxy.sqlite3"
    with BackgroundServer(simulate=True, simulator_options=FAST, database=db) as server:
        target = Target(server, db)
        yield target
        target.snapshots.conn.close()


def assert_envelope(status: int, headers: Any, body: Any) -> None:
    """An error body is the envelope, with the HTTP status and the X-Request-Id as trace_id."""
    assert isinstance(body, dict) and set(body) == {"success", "error"}, body
    assert body["success"] is False, body
    error = body["error"]
    assert set(error) == ERROR_FIELDS, error
    assert error["status"] == status, error
    assert error["trace_id"] == headers["x-request-id"], (error, headers)
    assert all(isinstance(error[k], str) and error[k] for k in ("code", "message", "system_message", "type"))
    assert isinstance(error["details"], dict), error


def error_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400:
        return None
    headers = {name: values[0] for name, values in response.headers.items()}
    assert_envelope(response.status_code, headers, response.json())
    return True


def json_schema_conformance(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's response_schema_conformance, except on event streams (checked by sse_stream).

    Before OpenAPI 3.2 schemathesis reads a text/event-stream `schema` as the schema of *each event*
    ({data, event, id, retry}); the document's `{"type": "string"}` describes the whole body, so every
    event would be reported as "not of type string".
    """
    if response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return None
    return response_schema_conformance(ctx, response, case)


def sse_stream(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 200 event stream: StreamEvent frames, exactly one terminal event, last before [DONE]."""
    if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return None
    events = sse.parse(response.content)
    assert events and events[-1] == "[DONE]", events[-3:]
    for event in events[:-1]:
        assert isinstance(event, dict), events
        STREAM_EVENT.validate(event)
    terminal = [e for e in events[:-1] if isinstance(e, dict) and e["event"] in TERMINAL]
    assert len(terminal) == 1 and terminal[0] is events[-2], events[-3:]
    return True


CHECKS: list[CheckFunction] = [not_a_server_error, error_envelope, json_schema_conformance, sse_stream]


def test_served_document_is_the_fuzzed_one(target: Target) -> None:
    assert httpx.get(f"{target.url}/openapi.json").json() == openapi_document()


# The server runs in this process: websockets' keepalive pings (bridge <-> simulator) call the global
# `random` while hypothesis draws a case, which hypothesis takes for a strategy using `random`.
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)
@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
def test_api(case: schemathesis.Case[Any], target: Target) -> None:
    before = target.snapshot()
    response = case.call(base_url=target.url, headers={"X-API-Key": KEY}, timeout=30)
    case.validate_response(response, checks=CHECKS, headers={"X-API-Key": KEY})
    if response.status_code >= 400:
        assert target.snapshot() == before, f"{case.method} {case.path} answered {response.status_code} but stored"


DEEP = b"[" * 100_000 + b"]" * 100_000


CREATE = "/v1/model/response"
HOSTILE = [
    pytest.param("POST", CREATE, b'{"inputs": [{"content": "hi \\ud800"}]}', id="create-content"),
    pytest.param("POST", CREATE, b'{"inputs": [{"content": "\\udfff"}], "stream": true}', id="sse"),
    pytest.param("POST", CREATE, b'{"inputs": [{"content": "hi"}], "thread_id": "\\ud800"}', id="tid"),
    pytest.param("POST", CREATE, b'{"inputs": [{"content": "hi"}], "model": "\\ud800"}', id="model"),
    pytest.param("POST", "/v1/threads", b'{"title": "\\ud800"}', id="thread-title"),
    pytest.param("PATCH", "/v1/threads/{thread}", b'{"title": "\\ud800"}', id="patch-title"),
    pytest.param("POST", "/v1/threads", b'{"metadata": {"\\ud800": 1}}', id="thread-metadata"),
    pytest.param("PATCH", "/v1/threads/{thread}", b'{"metadata": {"k": "\\ud800"}}', id="patch-md"),
    pytest.param("POST", CREATE, b'{"metadata": ' + DEEP + b"}", id="create-deep"),
    pytest.param("POST", "/v1/threads", DEEP, id="thread-deep"),
    pytest.param("POST", CREATE, b'{"inputs": [{"content": "hi"}], "temperature": NaN}', id="nan"),
    pytest.param("POST", CREATE, b'{"inputs": [{"content": "hi"}], "max_tokens": 1' + b"0" * 5000 + b"}", id="bigint"),
    pytest.param("POST", CREATE, b'{"inputs": [{"content": "\xff\xfe"}]}', id="not-utf8"),
    pytest.param("PATCH", "/v1/threads/thrd_nope", b'{"title": "\\ud800"}', id="patch-unknown"),
]


@pytest.mark.parametrize(("method", "path", "body"), HOSTILE)
def test_hostile_bodies(target: Target, method: str, path: str, body: bytes) -> None:
    headers = {"X-API-Key": "hostile-key", "Content-Type": "application/json"}
    if "{thread}" in path:
        thread = httpx.post(f"{target.url}/v1/threads", json={}, headers=headers).json()["id"]
        path = path.format(thread=thread)
    before = target.snapshot()
    response = httpx.request(method, target.url + path, content=body, headers=headers, timeout=30)
    if response.status_code >= 400:
        assert target.snapshot() == before, f"answered {response.status_code} but stored"
        assert_envelope(response.status_code, response.headers, response.json())
    assert response.status_code < 500, response.text


def test_stored_lone_surrogate_does_not_break_listing(target: Target) -> None:
    headers = {"X-API-Key": "poisoned-key", "Content-Type": "application/json"}
    body = b'{"inputs": [{"content": "hi"}], "metadata": {"\\ud800": 1}}'
    created = httpx.post(f"{target.url}/v1/model/response", content=body, headers=headers, timeout=30)
    assert created.status_code < 500, created.text
    listing = httpx.get(f"{target.url}/v1/threads", headers=headers)
    assert listing.status_code < 500, listing.text
