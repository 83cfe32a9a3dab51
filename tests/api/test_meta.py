"""v5's `health` and `config` groups through the real SDK (sync and async)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from aitronos import Aitronos, AsyncAitronos
from support import KEY, OTHER_KEY, Harness, make_config


def v5(harness: Harness, key: str = KEY) -> Aitronos:
    http = httpx.Client(timeout=30)
    harness.closers.append(http.close)
    return Aitronos(api_key=key, base_url=harness.url, httpx_client=http)


def test_health_and_auth_mode_open(harness: Harness) -> None:
    client = v5(harness)
    assert client.health.liveness_check().status == "healthy"
    details = client.health.readiness_check()
    assert details.status == "healthy"
    components = {c.name: c for c in details.components}
    assert set(components) == {"database", "lmstudio", "streams"}
    assert all(c.status == "healthy" for c in details.components)
    assert components["database"].details == str(harness.db)
    assert components["lmstudio"].details and "simulated-llm" in components["lmstudio"].details
    mode = client.config.get_auth_mode()
    assert mode.authentication_mode == "open" and mode.dev_login_enabled is False
    assert mode.dev_prefill_email is None and mode.dev_prefill_password is None


def test_details_need_a_key_when_keys_are_configured(make_harness: Callable[..., Harness]) -> None:
    h = make_harness(make_config(auth={"api_keys": [KEY]}))
    assert v5(h).config.get_auth_mode().authentication_mode == "api_key"
    stranger = v5(h, OTHER_KEY)
    assert stranger.health.liveness_check().status == "healthy"
    hidden = stranger.health.readiness_check()
    assert hidden.status == "healthy" and hidden.components == []
    with httpx.Client(base_url=h.url) as anonymous:
        raw = anonymous.get("/v1/health/details").text
    assert str(h.db) not in raw and h.sim.host_port not in raw
    shown = v5(h).health.readiness_check()
    assert {c.name for c in shown.components} == {"database", "lmstudio", "streams"}


def test_details_degraded_when_lmstudio_is_gone(harness: Harness) -> None:
    harness.sim.stop()
    details = v5(harness).health.readiness_check()
    assert details.status == "degraded"
    lmstudio = next(c for c in details.components if c.name == "lmstudio")
    assert lmstudio.status == "unhealthy" and lmstudio.details


async def test_health_and_config_async(harness: Harness) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = AsyncAitronos(api_key=KEY, base_url=harness.url, httpx_client=http)
        assert (await client.health.liveness_check()).status == "healthy"
        assert (await client.health.readiness_check()).status == "healthy"
        assert (await client.config.get_auth_mode()).authentication_mode == "open"


def test_wrong_method_is_the_envelope(harness: Harness) -> None:
    with harness.client() as client:
        response = client.post("/v1/health/")
    assert response.status_code == 405 and response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
