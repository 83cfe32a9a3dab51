"""Every field v5 and FR can send on a create: honoured (edit, branch, reset, structured output)
or refused with a 422 naming it, never accepted and ignored."""

from __future__ import annotations

import inspect
import json
from typing import Any

import aitronos
import jsonschema
import pytest
from support import Harness

from proxy.wire.requests import NOT_SUPPORTED, CreateResponseRequest


def _say(client: Any, text: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/model/response", json={"inputs": [{"content": f"{text} [tokens=3]"}], **fields})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _sent(h: Harness) -> list[str]:
    """The user and assistant texts LM Studio received in the last prediction."""
    return [m["text"] for m in h.sim.predictions()[-1]["history"] if m["role"] in ("user", "assistant")]


def _thread_texts(client: Any, thread_id: str, **params: Any) -> list[str]:
    data = client.get(f"/v1/threads/{thread_id}/messages", params=params).json()["data"]
    return [m["content"] for m in data]


def test_an_edit_replaces_the_message_and_what_followed(harness: Harness) -> None:
    with harness.client() as client:
        first = _say(client, "one")
        thread = first["thread_id"]
        _say(client, "two", thread_id=thread)
        messages = client.get(f"/v1/threads/{thread}/messages").json()["data"]
        two = next(m for m in messages if m["content"].startswith("two"))
        _say(client, "TWO edited", thread_id=thread, edit_message_id=two["id"])
        assert _sent(harness)[-1].startswith("TWO edited") and not any(t.startswith("two") for t in _sent(harness))
        listed = _thread_texts(client, thread)
        assert len(listed) == 4 and listed[2].startswith("TWO edited") and not any(t.startswith("two") for t in listed)
        everything = client.get(f"/v1/threads/{thread}/messages", params={"include_deleted": "true"}).json()["data"]
        deleted = [m for m in everything if "deleted_at" in m]
        assert [m["content"][:3] for m in deleted][:1] == ["two"] and len(deleted) == 2
        assert client.get(f"/v1/threads/{thread}").json()["message_count"] == 4


def test_a_branch_keeps_the_message_and_drops_what_followed(harness: Harness) -> None:
    with harness.client() as client:
        first = _say(client, "root")
        thread = first["thread_id"]
        _say(client, "later", thread_id=thread)
        root_answer = client.get(f"/v1/threads/{thread}/messages").json()["data"][1]
        _say(client, "other way", thread_id=thread, previous_message_id=root_answer["id"])
        sent = _sent(harness)
        assert sent[0].startswith("root") and sent[-1].startswith("other way") and len(sent) == 3


def test_a_reset_continues_after_that_response(harness: Harness) -> None:
    with harness.client() as client:
        first = _say(client, "keep")
        _say(client, "forget", thread_id=first["thread_id"])
        _say(client, "again", previous_response_id=first["response_id"])  # thread_id may be omitted
        sent = _sent(harness)
        assert sent[0].startswith("keep") and sent[-1].startswith("again") and len(sent) == 3
        assert not any(t.startswith("forget") for t in _thread_texts(client, first["thread_id"]))


def test_a_quick_edit_stop_of_an_edit_restores_the_original(harness: Harness) -> None:
    with harness.client() as client:
        first = _say(client, "original")
        thread = first["thread_id"]
        original = client.get(f"/v1/threads/{thread}/messages").json()["data"][0]
        body = {
            "inputs": [{"content": "edited [tokens=5000]"}], "thread_id": thread, "edit_message_id": original["id"],
            "stream": True,
        }  # fmt: skip
        with client.stream("POST", "/v1/model/response", json=body) as response:
            assert response.status_code == 200
            cancel = client.post(f"/v1/model/response/{thread}/cancel").json()
        assert cancel["cancel_mode"] == "quick_edit"
        texts = _thread_texts(client, thread)
        assert len(texts) == 2 and texts[0].startswith("original")


REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "both resets": (
        {"previous_message_id": "msg_a", "edit_message_id": "msg_b", "thread_id": "t"},
        "previous_message_id",
    ),
    "edit without thread": ({"edit_message_id": "msg_a"}, "edit_message_id"),
    "branch without thread": ({"previous_message_id": "msg_a"}, "previous_message_id"),
    "schema missing": ({"output_mode": "json_schema"}, "json_schema"),
    "bad response format": ({"responseFormat": {"type": "xml"}}, "response_format"),
}
NOT_HONOURED: dict[str, dict[str, Any]] = {
    "tools[0].type": {"tools": [{"type": "personalConnector", "connector_id": "c"}]},
    "include": {"include": ["usage.detailed"]},
    "system_tools.web_search": {"system_tools": {"web_search": {"mode": "on"}}},
    "vector_store_ids": {"vector_store_ids": ["vs_1"]},
    "space_id": {"space_id": "spc_1"},
    "workflow_id": {"workflow_id": "wf_1"},
    "reasoning.effort": {"reasoning": {"effort": "high"}},
    "reasoning.summary": {"reasoning": {"summary": "detailed"}},
    "inputs[0].content[1]": {"inputs": [{"content": [{"type": "text", "text": "a"}, {"type": "audio", "data": "x"}]}]},
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_contradictions_are_a_422_naming_the_field(harness: Harness, case: tuple[dict[str, Any], str]) -> None:
    fields, field = case
    with harness.client() as client:
        response = client.post("/v1/model/response", json={"inputs": [{"content": "hi"}], **fields})
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["error"]["details"]["errors"]]


@pytest.mark.parametrize("field", NOT_HONOURED.keys())
def test_what_the_proxy_cannot_honour_is_refused_never_dropped(harness: Harness, field: str) -> None:
    body = {"inputs": [{"content": "hi"}], **NOT_HONOURED[field]}
    with harness.client() as client:
        before = client.get("/v1/threads").json()["data"]
        response = client.post("/v1/model/response", json=body)
        assert response.status_code == 422, response.text
        errors = response.json()["error"]["details"]["errors"]
        assert any(e["field"] == field and NOT_SUPPORTED in e["message"] for e in errors), errors
        assert client.get("/v1/threads").json()["data"] == before
    assert harness.sim.predictions() == []


def test_values_that_ask_for_nothing_are_accepted(harness: Harness) -> None:
    quiet = {
        "tools": [], "include": [], "system_tools": {"web_search": {"mode": "off"}}, "vector_store_ids": [],
        "reasoning": {"effort": "medium", "summary": "auto"}, "disable_rules": True,
    }  # fmt: skip
    with harness.client() as client:
        assert _say(client, "hi", **quiet)["status"] == "completed"


def _declared() -> set[str]:
    names = set()
    for name, field in CreateResponseRequest.model_fields.items():
        names.add(name)
        alias = field.validation_alias
        names |= {str(c) for c in getattr(alias, "choices", ())}
    return names


def test_every_field_either_sdk_can_send_is_declared() -> None:
    """A new SDK field cannot slip through: each one is declared, hence honoured or refused."""
    v5 = set(
        inspect.signature(aitronos.Aitronos(api_key="k", base_url="http://x").responses.create_response).parameters
    )
    v5 -= {"request_options"}
    assert v5 - _declared() == set()
    import freddy.responses

    fr = set(inspect.signature(freddy.responses.ResponsesAPI.create).parameters) - {"self", "kwargs"}
    # FR sends these under camelCase names (see its `create`): both spellings are declared.
    fr_wire = {{"organization_id": "organizationId", "thread_id": "threadId", "assistant_id": "assistantId",
                "max_tokens": "maxTokens", "response_format": "responseFormat"}.get(n, n) for n in fr}  # fmt: skip
    assert fr_wire - _declared() == set()
    v5_message = set(aitronos.InputMessage.model_fields)
    assert v5_message - set(CreateResponseRequest.model_fields["inputs"].annotation.__args__[0].model_fields) == set()  # type: ignore[union-attr]


def test_structured_output_reaches_lm_studio_and_the_answer_fits(harness: Harness) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer", "minimum": 0}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    with harness.client() as client:
        answer = _say(client, "where", output_mode="json_schema", json_schema={"name": "place", "schema": schema})
        jsonschema.validate(json.loads(answer["response"]), schema)
        assert harness.sim.predictions()[-1]["config"]["llm.prediction.structured"] == {
            "type": "json", "jsonSchema": schema,
        }  # fmt: skip
        _say(client, "anything", responseFormat={"type": "json_object"})
        structured = harness.sim.predictions()[-1]["config"]["llm.prediction.structured"]
        assert structured["type"] == "json" and json.dumps(structured["jsonSchema"]) == '{"type": "object"}'
