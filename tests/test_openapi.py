"""The OpenAPI document: valid 3.1, served, in step with the app's routes and with real bodies."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from starlette.applications import Starlette
from starlette.routing import Mount, Route

import proxy
from proxy.app import create_app, openapi_document
from proxy.config import Config

KEY = "sk-test-openapi"


@functools.cache
def document() -> dict[str, Any]:
    return openapi_document()


HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Starlette]:
    app = create_app(Config(), database=tmp_path / "db.sqlite3")
    yield app
    app.state.proxy.store.close()  # no lifespan runs under ASGITransport, so close what it would


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://localhost") as client:
        yield client


def served_operations(app: Starlette) -> set[tuple[str, str]]:
    """(path, method) for every Route the app serves; HEAD (implied by GET) and Mounts are skipped."""
    ops = set()
    for route in app.routes:
        if isinstance(route, Mount):
            continue
        assert isinstance(route, Route), f"unexpected route type {route!r}: teach this test about it"
        path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)  # {id:int} → {id}, as OpenAPI spells it
        ops |= {(path, m.lower()) for m in route.methods or () if m != "HEAD"}
    return ops


def documented_operations() -> set[tuple[str, str]]:
    return {(path, method) for path, item in document()["paths"].items() for method in item if method in HTTP_METHODS}


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema, or the component schema it refers to."""
    if "$ref" in schema:
        resolved: dict[str, Any] = document()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return resolved
    return schema


def schema_validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator for components/schemas/NAME, resolving its $refs inside the whole document."""
    root = {**document(), "$ref": f"#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def test_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)


def test_info_version_is_the_package_version() -> None:
    assert document()["info"]["version"] == proxy.__version__


def test_every_served_operation_is_documented(app: Starlette) -> None:
    assert served_operations(app) - documented_operations() == set()


def test_every_documented_operation_is_served(app: Starlette) -> None:
    assert documented_operations() - served_operations(app) == set()


def test_every_operation_id_is_unique() -> None:
    ids = [op["operationId"] for item in document()["paths"].values() for m, op in item.items() if m in HTTP_METHODS]
    assert len(ids) == len(set(ids))


async def test_openapi_json_is_served_without_a_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    assert response.json() == document()


ERROR_CASES: dict[str, tuple[str, str, dict[str, Any], int, str]] = {
    "no-key": ("GET", "/v1/threads", {}, 401, "AUTHENTICATION_REQUIRED"),
    "not-json": ("PATCH", "/v1/threads/thrd_x", {"content": b"{nope", "headers": {"X-API-Key": KEY}}, 400, ""),
    "unknown-thread": ("GET", "/v1/threads/thrd_missing", {"headers": {"X-API-Key": KEY}}, 404, ""),
    "wrong-method": ("PUT", "/v1/threads", {"headers": {"X-API-Key": KEY}}, 405, "METHOD_NOT_ALLOWED"),
    "bad-limit": ("GET", "/v1/threads?limit=0", {"headers": {"X-API-Key": KEY}}, 422, "VALIDATION_ERROR"),
    "bad-inputs": ("POST", "/v1/model/response", {"json": {"inputs": []}, "headers": {"api-key": KEY}}, 422, ""),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
async def test_real_errors_match_the_documented_envelope(
    client: httpx.AsyncClient, case: tuple[str, str, dict[str, Any], int, str]
) -> None:
    method, url, kwargs, status, code = case
    response = await client.request(method, url, **kwargs)
    assert response.status_code == status
    body = response.json()
    schema_validator("ErrorEnvelope").validate(body)
    # The documented fields are exactly the real ones: neither can grow without the other.
    envelope = document()["components"]["schemas"]["ErrorEnvelope"]
    assert set(body) == set(envelope["properties"])
    error_schema = resolve(envelope["properties"]["error"])
    assert set(body["error"]) == set(error_schema["required"]) == set(error_schema["properties"])
    assert body["error"]["status"] == status
    assert body["error"]["trace_id"] == response.headers["x-request-id"]
    if code:
        assert body["error"]["code"] == code
    # ...and the status is one the document lists for that operation (405 is document-wide).
    path = re.sub(r"/thrd_\w+", "/{thread_id}", url.split("?")[0])
    operation = document()["paths"][path].get(method.lower())
    if operation is not None:
        assert str(status) in operation["responses"]


async def test_real_bodies_match_their_schemas(client: httpx.AsyncClient) -> None:
    """The endpoints that need no LM Studio answer with bodies their schemas accept, field for field."""
    headers = {"X-API-Key": KEY}
    created = await client.post("/v1/threads", json={"title": "t", "metadata": {"a": 1}}, headers=headers)
    assert created.status_code == 201
    thread_id = created.json()["id"]
    cases = {
        "Thread": created,
        "ThreadList": await client.get("/v1/threads?include_total=true", headers=headers),
        "ThreadPin": await client.post(f"/v1/threads/{thread_id}/pin", headers=headers),
        "MessageList": await client.get(f"/v1/threads/{thread_id}/messages", headers=headers),
        "UsageList": await client.get("/v1/usage", headers=headers),
        "ActiveStreamList": await client.get("/v1/model/response/active", headers=headers),
        "OutputModes": await client.get("/v1/model/response/output-modes", headers=headers),
        "ReasoningLevels": await client.get("/v1/model/response/reasoning-levels", headers=headers),
        "ThreadsDeleted": await client.delete("/v1/threads", headers=headers),
    }
    schemas = document()["components"]["schemas"]
    for name, response in cases.items():
        assert response.status_code in (200, 201), (name, response.text)
        body = response.json()
        schema_validator(name).validate(body)
        undocumented = set(body) - set(schemas[name]["properties"])
        assert not undocumented, f"{name}: fields missing from the document: {undocumented}"
    thread = cases["ThreadList"].json()["data"][0]
    assert set(thread) == set(schemas["Thread"]["properties"])
