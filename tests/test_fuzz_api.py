"""Fuzz the running proxy with schemathesis, driven by its own OpenAPI document.

Every operation gets a bounded, derandomized batch of generated requests (valid and invalid) against
a real uvicorn server backed by the simulator at full speed. Each response must not be a 5xx, every
error must be the envelope with the matching status and trace id, 2xx bodies must match the
document, and a rejected request must leave the database exactly as it was.
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
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from proxy import openapi, sse
from proxy.background import BackgroundServer

KEY = "test-key-one"
# As tests/conftest.py: tokens as fast as possible, near-instant loads and prompt processing.
FAST = {"tokens_per_second": 0.0, "load_seconds": 0.05, "prompt_seconds": 0.0}
TERMINAL = ("response.completed", "response.error", "response.cancelled")
STREAM_EVENT = jsonschema.Draft202012Validator(
    {"$ref": "#/components/schemas/StreamEvent", "components": openapi.document()["components"]}
)
ERROR_FIELDS = {"code", "message", "system_message", "type", "status", "details", "trace_id", "timestamp"}

# The same document the server renders at /openapi.json (test_served_document_is_the_fuzzed_one checks it);
# loading it at import time lets pytest list one test per operation.
import os
schema = schemathesis.openapi.from_dict(
    openapi.document(),
    config=schemathesis.config.SchemathesisConfig.from_dict(
        {"max-stream-events": 100_000, "phases": {"coverage": {"enabled": os.environ.get("COV", "1") == "1"}}}
    ),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundServer]:
    """One proxy + simulator for the whole module (per-case servers would cost more than the cases)."""
    db = tmp_path_factory.mktemp("fuzz") / "proxy.sqlite3"
    with BackgroundServer(simulate=True, simulator_options=FAST, database=db) as running:
        running.snapshots = Snapshots(db)  # type: ignore[attr-defined]
        yield running
        running.snapshots.conn.close()  # type: ignore[attr-defined]


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


def wait_idle(server: BackgroundServer, timeout: float = 10.0) -> None:
    """Wait until no stream runs (a finished stream may still be saving after its [DONE])."""
    deadline = time.monotonic() + timeout
    while server.proxy.registry.streams:
        if time.monotonic() > deadline:
            raise TimeoutError("a stream is still registered")
        time.sleep(0.01)


def error_envelope(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx body is the error envelope, with the HTTP status and the X-Request-Id as trace_id."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"success", "error"}, body
    assert body["success"] is False, body
    error = body["error"]
    assert set(error) == ERROR_FIELDS, error
    assert error["status"] == response.status_code, error
    assert error["trace_id"] == response.headers["x-request-id"][0], (error, response.headers)
    assert all(isinstance(error[k], str) and error[k] for k in ("code", "message", "system_message", "type"))
    assert isinstance(error["details"], dict), error
    return True


def json_schema_conformance(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's response_schema_conformance, except on event streams (checked by sse_stream)."""
    if response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return None
    return response_schema_conformance(ctx, response, case)


def sse_stream(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 200 event stream: StreamEvent frames, exactly one terminal event, then [DONE]."""
    if not response.headers.get("content-type", [""])[0].startswith("text/event-stream"):
        return None
    events = sse.parse(response.content)
    assert events and events[-1] == "[DONE]", events[-3:]
    assert all(isinstance(e, dict) for e in events[:-1]), events
    for event in events[:-1]:
        STREAM_EVENT.validate(event)
    terminal = [e for e in events[:-1] if isinstance(e, dict) and e["event"] in TERMINAL]
    assert len(terminal) == 1 and terminal[0] is events[-2], events[-3:]
    return True


CHECKS = [not_a_server_error, error_envelope, json_schema_conformance, sse_stream]


def test_served_document_is_the_fuzzed_one(server: BackgroundServer) -> None:
    served = httpx.get(f"{server.base_url}/openapi.json").json()
    assert served == openapi.document()


# The server runs in this process: websockets' keepalive pings (bridge <-> simulator) call the global
# `random` while hypothesis draws a case, which hypothesis mistakes for a strategy using `random`.
@pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module inside strategies:hypothesis.errors.HypothesisDeprecationWarning"
)
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api(case: schemathesis.Case, server: BackgroundServer) -> None:
    wait_idle(server)
    snapshots: Snapshots = server.snapshots  # type: ignore[attr-defined]
    before = snapshots.current()
    response = case.call(base_url=server.base_url, headers={"X-API-Key": KEY}, timeout=30)
    case.validate_response(response, checks=CHECKS, headers={"X-API-Key": KEY})
    import collections, os

    if os.environ.get("FUZZ_STATS"):
        with open("/tmp/fuzz_stats.txt", "a") as f:
            f.write(f"{case.method} {case.path} {response.status_code} {response.elapsed:.3f}\n")
    if 400 <= response.status_code < 500:
        wait_idle(server)
        assert snapshots.current() == before, f"{case.method} {case.path} answered {response.status_code} but stored something"
