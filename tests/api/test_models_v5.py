"""`GET /v1/models` in v5's shape, through the real v5 SDK (sync and async) against the simulator."""

from __future__ import annotations

import httpx
from aitronos import Aitronos, AsyncAitronos
from support import KEY, Harness

from proxy.models import model_capabilities


def v5(harness: Harness) -> Aitronos:
    http = httpx.Client(timeout=30)
    harness.closers.append(http.close)
    return Aitronos(api_key=KEY, base_url=harness.url, httpx_client=http)


def test_list_models_parses_with_capabilities_and_context(harness: Harness) -> None:
    listing = v5(harness).models.list_models()
    keys = [m.key for m in listing.models]
    # Loaded first (the simulator's context length 4096), then the downloaded one (its maximum, 8192).
    assert keys == ["simulated-llm", "simulated-reasoner", "simulated-large"]
    assert listing.total_count == 3
    by_key = {m.key: m for m in listing.models}
    assert by_key["simulated-llm"].context_window == 4096 and by_key["simulated-large"].context_window == 8192
    llm = by_key["simulated-llm"]
    assert llm.id == "simulated-llm" and llm.name == "Simulated Llm" and llm.provider == "lmstudio"
    assert llm.is_visible_in_ui is True and llm.is_deprecated is False
    assert llm.availability_status == "general_availability"
    # The simulator reports vision and trainedForToolUse false: neither capability is claimed.
    assert llm.capabilities == ["text_generation", "conversation", "streaming"]
    assert llm.pricing is None and llm.last_used_at is None and llm.description is None


def test_list_models_flags(harness: Harness) -> None:
    client = v5(harness)
    client.responses.create_response(inputs=[{"role": "user", "content": "hi [tokens=2]"}], model="simulated-reasoner")
    listing = client.models.list_models(
        include_capabilities=False, include_details=True, include_pricing=True, include_recent_usage=True
    )
    by_key = {m.key: m for m in listing.models}
    assert all(m.capabilities is None for m in listing.models)
    assert by_key["simulated-reasoner"].last_used_at is not None
    assert by_key["simulated-llm"].last_used_at is None
    assert by_key["simulated-llm"].pricing is not None and by_key["simulated-llm"].pricing.message
    large = by_key["simulated-large"]
    assert large.description and "loaded on first use" in large.description
    assert large.model_version == "1B"
    extra = large.model_extra or {}
    assert extra["architecture"] == "llama" and extra["max_context_length"] == 8192 and extra["loaded"] is False


def test_playground_listing_is_kept_beside(harness: Harness) -> None:
    with harness.client() as client:
        body = client.get("/v1/models").json()
    assert body["object"] == "list" and body["aliases"] == {}
    assert [m["id"] for m in body["data"]] == [m["key"] for m in body["models"]]
    assert body["data"][0] == {
        "id": "simulated-llm", "object": "model", "display_name": "Simulated Llm", "loaded": True,
        "context_length": 4096,
    }  # fmt: skip


def test_bad_flag_is_a_422_envelope(harness: Harness) -> None:
    with harness.client() as client:
        response = client.get("/v1/models", params={"include_details": "maybe"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [e["field"] for e in error["details"]["errors"]] == ["include_details"]


async def test_list_models_async(harness: Harness) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = AsyncAitronos(api_key=KEY, base_url=harness.url, httpx_client=http)
        listing = await client.models.list_models(ui_models_only=True, include_deprecated=True, include_legacy=True)
    assert listing.total_count == 3 and listing.models[0].capabilities is not None


def test_capabilities_follow_lmstudio_flags() -> None:
    assert model_capabilities({"vision": True, "trained_for_tool_use": True})[-2:] == ["vision", "tool_calling"]
    assert "vision" not in model_capabilities({"vision": False, "trained_for_tool_use": True})
