"""Outcome decisions: what each way of ending a stream commits to the store and tells the client."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.errors import BackendUnavailable
from proxy.outcomes import Ended, record
from proxy.spec import StreamSpec
from proxy.store import Store, Usage

OWNER = "owner-hash"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "db.sqlite3")
    yield store
    store.close()


def _accepted(store: Store, *, streaming: bool = True) -> StreamSpec:
    thread_id, response_id, ids, created = store.begin_response(OWNER, "", "m", [("user", "question")], {})
    return StreamSpec(
        owner=OWNER, thread_id=thread_id, response_id=response_id, message_ids=ids, thread_created=created,
        model="m", messages=[], prediction_config={}, output_mode="text", trace_id="t", streaming=streaming,
    )  # fmt: skip


def _ended(spec: StreamSpec, **changes: Any) -> Ended:
    fields: dict[str, Any] = {
        "spec": spec, "text": "partial answer", "reasoning": "", "stop_reason": None, "cancel_mode": None,
        "duration": 1.0, "usage": Usage(input_tokens=3, output_tokens=4, stop_reason="eosFound"), "error": None,
    }  # fmt: skip
    return Ended(**{**fields, **changes})


def _messages(store: Store, thread_id: str) -> list[dict[str, Any]]:
    return store.list_messages(thread_id, limit=10, order="asc", after=None, before=None).rows


def _response(store: Store, response_id: str) -> sqlite3.Row:
    row: sqlite3.Row = store.db.execute("SELECT * FROM responses WHERE id = ?", (response_id,)).fetchone()
    return row


def test_completed_stores_the_answer(store: Store) -> None:
    spec = _accepted(store)
    outcome, final, event = record(store, _ended(spec, reasoning="hmm"))
    assert outcome == "completed" and final.message_id is not None
    assert event["event"] == "response.completed" and event.get("response") == "partial answer"
    assert event.get("reasoning_content") == "hmm"
    assert [(m["role"], m["content"]) for m in _messages(store, spec.thread_id)] == [
        ("user", "question"), ("assistant", "partial answer"),
    ]  # fmt: skip
    assert _response(store, spec.response_id)["status"] == "completed"


def test_quick_edit_deletes_both_messages_and_the_thread_it_made(store: Store) -> None:
    spec = _accepted(store)
    outcome, _, event = record(store, _ended(spec, stop_reason="cancel", cancel_mode="quick_edit"))
    assert outcome == "cancelled" and event["event"] == "response.cancelled"
    assert event.get("cancel_mode") == "quick_edit"
    assert store.get_thread(spec.thread_id) is None
    row = _response(store, spec.response_id)  # usage outlives the messages
    assert row["status"] == "cancelled" and row["output_tokens"] == 4 and row["cancel_mode"] == "quick_edit"


def test_keep_partial_keeps_the_text_marked_cancelled(store: Store) -> None:
    spec = _accepted(store)
    record(store, _ended(spec, stop_reason="cancel", cancel_mode="keep_partial", usage=Usage(output_tokens=2)))
    answer = _messages(store, spec.thread_id)[-1]
    assert answer["content"] == "partial answer"
    assert answer["metadata"] == {"cancelled": True, "partial_content_length": 14, "cancel_mode": "keep_partial"}
    assert _response(store, spec.response_id)["stop_reason"] == "userStopped"  # LM Studio said nothing else


def test_a_disconnect_keeps_the_text_with_its_reason(store: Store) -> None:
    spec = _accepted(store)
    outcome, _, _ = record(store, _ended(spec, stop_reason="disconnect"))
    assert outcome == "cancelled"
    assert _messages(store, spec.thread_id)[-1]["metadata"]["cancel_reason"] == "client_disconnected"


def test_a_shutdown_keeps_the_text_and_tells_the_client(store: Store) -> None:
    spec = _accepted(store)
    outcome, _, event = record(store, _ended(spec, stop_reason="shutdown"))
    assert outcome == "cancelled" and event["event"] == "response.error"
    assert event.get("code") == "SERVER_SHUTTING_DOWN"
    meta = _messages(store, spec.thread_id)[-1]["metadata"]
    assert meta["interrupted"] is True and meta["cancel_reason"] == "server_shutdown"


def test_a_json_failure_with_nothing_generated_leaves_only_the_usage_row(store: Store) -> None:
    spec = _accepted(store, streaming=False)
    error = BackendUnavailable("LM Studio went away")
    outcome, final, event = record(store, _ended(spec, text="", error=error, http_answer=True))
    assert outcome == "failed" and final.error is error and event["event"] == "response.error"
    assert store.get_thread(spec.thread_id) is None  # a retry duplicates nothing
    assert _response(store, spec.response_id)["status"] == "failed"


def test_a_streaming_failure_keeps_the_partial_text(store: Store) -> None:
    spec = _accepted(store)
    record(store, _ended(spec, error=BackendUnavailable("LM Studio went away")))
    meta = _messages(store, spec.thread_id)[-1]["metadata"]
    assert meta["failed"] is True and meta["error"]["code"] == "MODEL_BACKEND_UNAVAILABLE"


def test_a_store_that_fails_still_gives_a_terminal_event(store: Store) -> None:
    spec = _accepted(store)
    store.db.execute("DROP TABLE responses")  # the store breaks between acceptance and the end
    outcome, final, event = record(store, _ended(spec))
    assert outcome == "failed" and event["event"] == "response.error" and event.get("code") == "INTERNAL_ERROR"
    assert final.error is not None
