"""Body limits, CORS and key handling at the edges."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import KEY, PNG_BASE64, Harness, make_config

from proxy.bridge import Bridge
from proxy.models import ModelCatalog


def test_chunked_body_over_the_limit_is_refused_while_reading(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(limits={"max_body_bytes": 2048}))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for _ in range(100):
            yield b" " * 1024

    with h.client() as client:
        response = client.post("/v1/model/response", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        assert client.get("/v1/threads").json()["data"] == []


def test_cors_is_off_unless_origins_are_configured(make_harness: Any) -> None:
    preflight = {"Origin": "http://example.test", "Access-Control-Request-Method": "POST"}
    closed: Harness = make_harness()
    with closed.client() as client:
        assert (
            "access-control-allow-origin"
            not in client.get("/v1/threads", headers={"Origin": "http://example.test"}).headers
        )
        assert "access-control-allow-origin" not in client.options("/v1/threads", headers=preflight).headers
    opened: Harness = make_harness(make_config(cors={"allow_origins": ["http://example.test"]}))
    with opened.client() as client:
        response = client.options("/v1/threads", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "http://example.test"
        other = client.get("/v1/threads", headers={"Origin": "http://elsewhere.test"})
        assert "access-control-allow-origin" not in other.headers


def test_configured_keys_and_every_header_form(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(auth={"api_keys": [KEY]}))
    for headers in ({"X-API-Key": KEY}, {"x-api-key": KEY}, {"api-key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        assert httpx.get(h.url + "/v1/threads", headers=headers).status_code == 200, headers
    for headers in ({"X-API-Key": "not-configured"}, {"Authorization": "Basic abc"}, {"X-API-Key": ""}, {}):
        response = httpx.get(h.url + "/v1/threads", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"


def test_logs_never_contain_api_keys(make_harness: Any, caplog: Any) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    h: Harness = make_harness()
    secret = "sk-very-secret-key-123"
    with h.client(secret) as client:
        client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "x [tokens=2]"}]})
        client.get("/v1/threads/thrd_nope")
        client.get("/v1/threads", headers={"Authorization": f"Bearer {secret}"})
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /v1/model/response 200" in text and "stream end" in text  # the lines are there...
    assert secret not in text  # ...and the key is not


def test_non_streaming_reports_proxy_overhead(harness: Harness) -> None:
    with harness.client() as client:
        response = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "x [tokens=2]"}]})
    overhead = float(response.headers["x-proxy-overhead-ms"])
    assert 0 <= overhead < float(response.elapsed.total_seconds() * 1000)


def test_streaming_reports_proxy_overhead_up_to_the_first_token(make_harness: Any) -> None:
    # LM Studio takes 150 ms for the prompt: the headers wait for it (they leave with the first
    # token), and the header's figure leaves it out, as the JSON answer's leaves out generation.
    h: Harness = make_harness(prompt_seconds=0.15)
    body = {"inputs": [{"role": "user", "content": "x [tokens=3]"}], "stream": True}
    with h.client() as client:
        # The first request also connects to LM Studio and lists its models (not a prediction).
        assert client.post("/v1/model/response", json={**body, "stream": False}).status_code == 200
        started = time.perf_counter()
        with client.stream("POST", "/v1/model/response", json=body) as response:
            waited_ms = (time.perf_counter() - started) * 1000
            overhead = float(response.headers["x-proxy-overhead-ms"])
            assert b"response.content_delta" in b"".join(response.iter_raw())
    assert waited_ms >= 150
    assert 0 <= overhead < 75  # the proxy's own part; with LM Studio's wait it would be over 150


def test_waiting_on_lm_studio_before_the_prediction_is_not_the_proxys_overhead(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LM Studio's model listing (the first request asks for it) and an image upload each take
    # ten seconds by the proxy's clock, moved forward instead of waited for: LM Studio's time,
    # which the header leaves out as it leaves out the prompt and the generation.
    skew = [0.0]
    clock = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: clock() + skew[0])
    waits: list[str] = []
    refresh, upload = ModelCatalog.refresh, Bridge.prepare_image

    async def slow_refresh(self: ModelCatalog) -> None:
        waits.append("listing")
        skew[0] += 10.0
        await refresh(self)

    async def slow_upload(self: Bridge, data: bytes, name: str) -> dict[str, Any]:
        waits.append("upload")
        skew[0] += 10.0
        return await upload(self, data, name)

    monkeypatch.setattr(ModelCatalog, "refresh", slow_refresh)
    monkeypatch.setattr(Bridge, "prepare_image", slow_upload)
    h: Harness = make_harness(models=["simulated-vlm:vision"])
    content = [{"type": "text", "text": "What is this? [tokens=3]"}, {"type": "image", "data": PNG_BASE64}]
    body = {"model": "simulated-vlm", "inputs": [{"role": "user", "content": content}]}
    with h.client() as client:
        answer = client.post("/v1/model/response", json=body)
        assert answer.status_code == 200, answer.text
        assert waits == ["listing", "upload"]
        with client.stream("POST", "/v1/model/response", json={**body, "stream": True}) as streamed:
            assert b"response.content_delta" in b"".join(streamed.iter_raw())
    assert waits == ["listing", "upload", "upload"]  # the listing is known by then
    assert 0 <= float(answer.headers["x-proxy-overhead-ms"]) < 10_000  # with LM Studio's waits: over 20,000
    assert 0 <= float(streamed.headers["x-proxy-overhead-ms"]) < 10_000


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("attacker.example:8000", False),
        ("localhost.attacker.example", False),
        ("127.0.0.1.nip.example", False),
        ("localhost:8000", True),
        ("app.localhost", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("192.168.1.20:8000", True),
        ("proxy.lan", True),
        ("api.team.example", True),
    ],
)
def test_only_hosts_that_cannot_be_rebound_are_served(make_harness: Any, host: str, served: bool) -> None:
    """DNS rebinding: a page that rebinds its name to 127.0.0.1 sends that name in Host."""
    h: Harness = make_harness(make_config(server={"allowed_hosts": ["proxy.lan", ".team.example"]}))
    with h.client() as client:
        client.post("/v1/threads", json={"title": "private"})
        response = client.get("/v1/threads", headers={"Host": host})
    if served:
        assert response.status_code == 200 and response.json()["data"][0]["title"] == "private"
    else:
        assert response.status_code == 421, response.text
        error = response.json()["error"]
        assert error["code"] == "MISDIRECTED_REQUEST" and "private" not in response.text
        assert "server.allowed_hosts" in error["message"]


def test_with_keys_the_operator_endpoints_need_one(make_harness: Any) -> None:
    h: Harness = make_harness(make_config(auth={"api_keys": [KEY]}))
    with h.client(key=None) as anonymous, h.client() as keyed:
        assert anonymous.get("/health").json() == {"status": "ok"}  # liveness stays public
        assert anonymous.get("/metrics").status_code == 401
        assert anonymous.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        detailed = keyed.get("/health").json()
        assert detailed["database"] == str(h.db) and "looked_at" in detailed["lmstudio"]
        metrics = keyed.get("/metrics")
        assert metrics.status_code == 200 and "proxy_streams" in metrics.text


def test_without_keys_the_operator_endpoints_stay_open(harness: Harness) -> None:
    assert httpx.get(f"{harness.url}/metrics").status_code == 200
    assert "lmstudio" in httpx.get(f"{harness.url}/health").json()
