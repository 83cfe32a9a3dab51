"""v5's `assistants` group through the real SDK (sync and async), stored per key in SQLite."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from aitronos import Aitronos, AsyncAitronos
from aitronos.core.api_error import ApiError
from aitronos.errors.unprocessable_entity_error import UnprocessableEntityError
from aitronos.types import AssistantResponse, AssistantStandardResponse, AssistantSummaryResponse
from support import KEY, OTHER_KEY, Harness

ORG = "org_local"


def v5(harness: Harness, key: str = KEY) -> Aitronos:
    http = httpx.Client(timeout=30)
    harness.closers.append(http.close)
    return Aitronos(api_key=key, base_url=harness.url, httpx_client=http)


def test_create_get_update_delete(harness: Harness) -> None:
    client = v5(harness)
    tools = {"system_tools": {"web_search": {"mode": "off"}}, "streamline_tools": ["sa_1"]}
    created = client.assistants.create_assistant(
        name="Helper", organization_id=ORG, instructions="Answer briefly.", default_model_key="simulated-llm",
        temperature=0.3, top_p=0.9, max_completion_tokens=200, output_mode="plain", description="d",
        tool_configurations=tools, metadata={"team": "a"},
    )  # fmt: skip
    assert created.id.startswith("asst_") and created.organization_id == ORG
    assert (created.name, created.instructions, created.default_model_key) == (
        "Helper",
        "Answer briefly.",
        "simulated-llm",
    )
    assert (created.temperature, created.top_p, created.max_completion_tokens) == (0.3, 0.9, 200)
    assert created.output_mode == "plain" and created.metadata == {"team": "a"} and created.is_active is True
    assert created.tool_configurations is not None and created.tool_configurations.streamline_tools == ["sa_1"]
    assert created.user_access_level == "owner" and created.created_at == created.updated_at

    got = client.assistants.get_assistant(created.id)
    assert got == created

    updated = client.assistants.update_assistant(
        created.id, name="Renamed", temperature=1.1, instructions=None, assistant_metadata={"team": "b"}
    )
    assert (updated.name, updated.temperature, updated.instructions) == ("Renamed", 1.1, None)
    assert updated.metadata == {"team": "b"} and updated.top_p == 0.9 and updated.default_model_key == "simulated-llm"
    assert client.assistants.get_assistant(created.id) == updated

    assert client.assistants.delete_assistant(created.id) is None
    with pytest.raises(ApiError) as missing:
        client.assistants.get_assistant(created.id)
    assert missing.value.status_code == 404
    assert missing.value.body["error"]["code"] == "RESOURCE_NOT_FOUND"


def test_store_gives_the_create_path_what_it_applies(harness: Harness) -> None:
    from proxy.auth import owner_of

    created = v5(harness).assistants.create_assistant(
        name="A", organization_id=ORG, instructions="Be terse.", default_model_key="simulated-reasoner", top_p=0.5
    )
    store = harness.server.proxy.store
    row = store.get_assistant(owner_of(KEY), created.id)
    assert row is not None
    assert (row["instructions"], row["model"], row["top_p"], row["temperature"]) == (
        "Be terse.",
        "simulated-reasoner",
        0.5,
        None,
    )
    assert row["max_tokens"] is None and row["output_mode"] is None
    assert store.get_assistant(owner_of(OTHER_KEY), created.id) is None
    assert store.get_assistant(owner_of(KEY), "asst_unknown") is None


def test_list_filters_pages_and_shapes(harness: Harness) -> None:
    client = v5(harness)
    ids = [client.assistants.create_assistant(name=f"bot {i}", organization_id=ORG).id for i in range(3)]
    other_org = client.assistants.create_assistant(name="elsewhere", organization_id="org_b").id
    client.assistants.update_assistant(ids[0], is_active=False)

    listed = client.assistants.list_assistants(organization_id=ORG)
    assert [a.id for a in listed.assistants] == [ids[2], ids[1]]  # newest first, inactive left out
    assert listed.total == 2 and listed.pagination.has_more is False
    assert all(isinstance(a, AssistantResponse) for a in listed.assistants)
    assert listed.filters_applied.include_inactive is False and listed.user_context.organization_count == 1

    page = client.assistants.list_assistants(
        organization_id=ORG, include_inactive=True, limit=2, offset=1, sort_by="name", sort_order="asc"
    )
    assert [a.id for a in page.assistants] == [ids[1], ids[2]] and page.total == 3
    assert page.pagination.has_more is False and page.pagination.offset == 1
    first = client.assistants.list_assistants(
        organization_id=ORG, include_inactive=True, limit=2, sort_by="name", sort_order="asc"
    )
    assert first.pagination.has_more is True

    summary = client.assistants.list_assistants(organization_id=ORG, fields="summary", search="bot 2")
    assert [a.id for a in summary.assistants] == [ids[2]]
    assert isinstance(summary.assistants[0], AssistantSummaryResponse) and summary.assistants[0].temperature == 0.7
    standard = client.assistants.list_assistants(organization_id="org_b", fields="standard")
    assert [a.id for a in standard.assistants] == [other_org]
    assert isinstance(standard.assistants[0], AssistantStandardResponse)
    assert standard.assistants[0].default_model_key == ""

    assert client.assistants.list_assistants(organization_id=ORG, vector_store_id="vs_1").total == 0
    assert client.assistants.list_assistants(organization_id=ORG, access_mode="organization").total == 0
    assert client.assistants.list_assistants(organization_id=ORG, visible_in_chat=False).total == 0
    assert client.assistants.list_assistants(organization_id=ORG, access_mode="private").total == 2


def test_another_keys_assistant_is_forbidden(harness: Harness) -> None:
    mine = v5(harness).assistants.create_assistant(name="mine", organization_id=ORG)
    stranger = v5(harness, OTHER_KEY)
    assert stranger.assistants.list_assistants(organization_id=ORG).total == 0
    calls: list[Callable[[], object]] = [
        lambda: stranger.assistants.get_assistant(mine.id),
        lambda: stranger.assistants.update_assistant(mine.id, name="theirs"),
        lambda: stranger.assistants.delete_assistant(mine.id),
    ]
    for call in calls:
        with pytest.raises(ApiError) as denied:
            call()
        assert denied.value.status_code == 403
        assert denied.value.body["error"]["code"] == "INSUFFICIENT_PERMISSIONS"
    assert v5(harness).assistants.get_assistant(mine.id).name == "mine"


def test_unsupported_fields_are_refused(harness: Harness) -> None:
    client = v5(harness)
    with pytest.raises(UnprocessableEntityError) as refused:
        client.assistants.create_assistant(
            name="x", organization_id=ORG, vector_store_ids=["vs_1"], seed=3, reasoning={"effort": "high"}
        )
    error = refused.value.body["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["status"] == 422
    assert error["message"] == "not supported by lmstudio-proxy: seed, reasoning, vector_store_ids"
    assert [e["field"] for e in error["details"]["errors"]] == ["seed", "reasoning", "vector_store_ids"]
    assert client.assistants.list_assistants(organization_id=ORG, include_inactive=True).total == 0

    created = client.assistants.create_assistant(name="ok", organization_id=ORG, seed=None)  # null: nothing to refuse
    with pytest.raises(UnprocessableEntityError) as refused_update:
        client.assistants.update_assistant(created.id, access_users=["u1"])
    assert "access_users" in refused_update.value.body["error"]["message"]


def test_bad_values_are_422_envelopes(harness: Harness) -> None:
    client = v5(harness)
    with pytest.raises(UnprocessableEntityError) as bad:
        client.assistants.create_assistant(name="", organization_id=ORG, temperature=3.0, output_mode="loud")
    fields = {e["field"] for e in bad.value.body["error"]["details"]["errors"]}
    assert fields == {"name", "temperature", "output_mode"}
    created = client.assistants.create_assistant(name="ok", organization_id=ORG)
    with pytest.raises(UnprocessableEntityError) as null_name:
        client.assistants.update_assistant(created.id, name=None)
    assert null_name.value.body["error"]["details"]["errors"] == [{"field": "name", "message": "cannot be null"}]
    with pytest.raises(ApiError) as unknown_model:
        client.assistants.create_assistant(name="m", organization_id=ORG, default_model_key="no-such-model")
    assert unknown_model.value.status_code == 404 and "no-such-model" in unknown_model.value.body["error"]["message"]
    with pytest.raises(UnprocessableEntityError):
        client.assistants.list_assistants(organization_id=ORG, sort_by="color")
    with harness.client() as http:
        response = http.post("/v1/assistants", json={"organization_id": ORG})
    assert response.status_code == 422 and response.json()["error"]["details"]["errors"][0]["field"] == "name"


async def test_assistants_async(harness: Harness) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = AsyncAitronos(api_key=KEY, base_url=harness.url, httpx_client=http)
        created = await client.assistants.create_assistant(name="async", organization_id=ORG, temperature=0.1)
        assert (await client.assistants.get_assistant(created.id)).temperature == 0.1
        updated = await client.assistants.update_assistant(created.id, default_model_key="simulated-llm")
        assert updated.default_model_key == "simulated-llm"
        listed = await client.assistants.list_assistants(organization_id=ORG)
        assert [a.id for a in listed.assistants] == [created.id]
        assert await client.assistants.delete_assistant(created.id) is None
        assert (await client.assistants.list_assistants(organization_id=ORG)).total == 0


def test_assistant_id_on_a_create_applies_the_assistant(harness: Harness) -> None:
    client = v5(harness)
    assistant = client.assistants.create_assistant(
        name="Brief", organization_id=ORG, instructions="Answer in one word.", temperature=0.2,
        max_completion_tokens=64, tool_configurations={"system_tools": {"web_search": {"mode": "off"}}},
    )  # fmt: skip
    first = client.responses.create_response(
        inputs=[{"role": "user", "content": "hi [tool=none] [tokens=3]"}], assistant_id=assistant.id
    )
    record = harness.sim.predictions()[-1]
    assert record["history"][0] == {"role": "system", "text": "Answer in one word."}
    assert record["config"]["llm.prediction.temperature"] == 0.2
    assert record["config"]["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 64}
    # The thread stays bound to it: a later request on the thread gets it without naming it...
    client.responses.create_response(
        inputs=[{"role": "user", "content": "again [tool=none] [tokens=3]"}], thread_id=first["thread_id"]
    )
    assert harness.sim.predictions()[-1]["history"][0]["text"] == "Answer in one word."
    # ...and another assistant on that thread is refused; an unknown one is a 404.
    other = client.assistants.create_assistant(name="Other", organization_id=ORG)
    with httpx.Client(base_url=harness.url, headers={"X-API-Key": KEY}) as http:
        rebound = http.post(
            "/v1/model/response",
            json={"inputs": [{"content": "x"}], "thread_id": first["thread_id"], "assistant_id": other.id},
        )
        assert rebound.status_code == 422 and rebound.json()["error"]["details"]["errors"][0]["field"] == "assistant_id"
        unknown = http.post("/v1/model/response", json={"inputs": [{"content": "x"}], "assistant_id": "asst_nope"})
        assert unknown.status_code == 404
    # Tools it cannot run here are refused, never dropped.
    searching = client.assistants.create_assistant(
        name="Search", organization_id=ORG, tool_configurations={"system_tools": {"web_search": {"mode": "on"}}}
    )
    with httpx.Client(base_url=harness.url, headers={"X-API-Key": KEY}) as http:
        refused = http.post("/v1/model/response", json={"inputs": [{"content": "x"}], "assistant_id": searching.id})
    assert refused.status_code == 422 and "not supported by lmstudio-proxy" in refused.text
