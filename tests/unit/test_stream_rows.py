"""When a stream stores its request's rows: right after LM Studio was sent the prediction, so the
commit is not on the way to the first token, and never in a way that loses or half-stores them.

The pump runs for real (`ActiveStream.run`) on a real store; only LM Studio is a fake here (the
same order through the real SDK and the simulator is covered in tests/api).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.backends import Backends
from proxy.bridge import Fragment
from proxy.config import Config
from proxy.errors import StorageUnavailable
from proxy.metrics import Metrics
from proxy.registry import StreamRegistry
from proxy.spec import StreamSpec
from proxy.store import Store, Usage, new_response
from proxy.streams import ActiveStream

from .support import OWNER


class _Prediction:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.generated_tokens = 0
        self.cancelled = self.closed = False
        self.go = asyncio.Event()  # the fragments flow once the test says so
        self.go.set()

    async def fragments(self) -> AsyncIterator[Fragment]:
        await self.go.wait()
        for text in self.texts:
            if self.cancelled:
                break
            self.generated_tokens += 1
            yield Fragment(text, 1, "content")

    async def cancel(self) -> None:
        self.cancelled = True

    @property
    def cancel_sent(self) -> bool:
        return self.cancelled

    def usage(self) -> Usage:
        reason = "userStopped" if self.cancelled else "eosFound"
        return Usage(input_tokens=2, output_tokens=self.generated_tokens, stop_reason=reason)

    async def aclose(self) -> None:
        self.closed = True


class _Bridge:
    """LM Studio with the model loaded; notes whether the rows were stored when it was asked."""

    def __init__(self, store: Store, prediction: _Prediction) -> None:
        self.store = store
        self.prediction = prediction
        self.stored_when_asked: bool | None = None
        self.on_predict: Any = None

    def loaded_handle(self, model: str) -> object:
        return object()

    async def predict(self, handle: object, messages: list[dict[str, Any]], config: dict[str, Any]) -> _Prediction:
        self.stored_when_asked = bool(self.store.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
        if self.on_predict is not None:
            await self.on_predict()
        return self.prediction


def _stream(store: Store, *, streaming: bool = True, registry: StreamRegistry | None = None) -> ActiveStream:
    """A stream of one user message, in `registry` (default: a registry of its own)."""
    if registry is None:
        config = Config()
        registry = StreamRegistry(config, store, Backends(config.lmstudio), Metrics())
    rows = new_response(OWNER, "", "m", [("user", "question")], {"visible_in_ui": True})
    spec = StreamSpec(
        owner=OWNER, thread_id=rows.thread_id, response_id=rows.response_id, message_ids=rows.message_ids,
        thread_created=True, model="m", messages=[], prediction_config={}, output_mode="text", trace_id="t",
        streaming=streaming, rows=rows,
    )  # fmt: skip
    stream = ActiveStream(spec, registry)
    registry.streams[spec.thread_id] = stream
    return stream


TABLES = ("threads", "messages", "responses")


def _counts(store: Store) -> tuple[int, int, int]:
    count = "SELECT COUNT(*) FROM {}"
    threads, messages, responses = (store.db.execute(count.format(t)).fetchone()[0] for t in TABLES)
    return threads, messages, responses


async def test_the_rows_are_stored_after_the_prediction_is_sent_and_before_the_handler_goes_on(store: Store) -> None:
    stream = _stream(store)
    prediction = _Prediction(["Hel", "lo"])
    prediction.go.clear()
    bridge = _Bridge(store, prediction)
    seen_at_sent: list[tuple[int, int, int]] = []

    async def handler() -> None:  # what `create_response` waits for before it answers
        await stream.sent.wait()
        seen_at_sent.append(_counts(store))
        prediction.go.set()

    waiting = asyncio.ensure_future(handler())
    await stream.run(bridge, store)  # type: ignore[arg-type]
    await waiting
    assert bridge.stored_when_asked is False  # LM Studio was asked first ...
    assert seen_at_sent == [(1, 1, 1)]  # ... and the handler went on only once they were committed
    assert stream.outcome == "completed" and stream.spec.rows is None
    row = store.get_response(stream.spec.response_id)
    assert row is not None and row["status"] == "completed" and row["user_message_id"] == stream.spec.message_ids[0]
    messages = store.list_messages(stream.thread_id, limit=10, order="asc", after=None, before=None).rows
    assert [(m["role"], m["content"]) for m in messages] == [("user", "question"), ("assistant", "Hello")]


@pytest.mark.parametrize("streaming", [True, False])
async def test_a_failed_commit_stops_the_prediction_and_stores_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch, streaming: bool
) -> None:
    stream = _stream(store, streaming=streaming)
    prediction = _Prediction(["never", "read"])
    bridge = _Bridge(store, prediction)

    def fail(rows: Any) -> None:
        raise StorageUnavailable("The database cannot be written: the disk is full.")

    monkeypatch.setattr(store, "store_response", fail)
    await stream.run(bridge, store)  # type: ignore[arg-type]
    assert prediction.cancelled and prediction.closed  # LM Studio is told at once, the channel closed
    assert prediction.generated_tokens == 0
    assert stream.outcome == "failed" and stream.final is not None
    assert isinstance(stream.final.error, StorageUnavailable)  # the client's HTTP 503
    assert _counts(store) == (0, 0, 0)
    assert stream.finished.is_set()


async def test_a_cancel_before_the_rows_are_stored_is_a_quick_edit_of_them(store: Store) -> None:
    stream = _stream(store)
    prediction = _Prediction(["a", "b", "c"])
    bridge = _Bridge(store, prediction)
    answered: list[Any] = []

    async def cancel_meanwhile() -> None:  # the cancel endpoint, while the prediction is being sent
        answered.append(asyncio.ensure_future(stream.cancel()))
        await stream._stop_requested.wait()  # the cancel has been requested: nothing is stored yet
        assert stream.stop_reason == "cancel" and _counts(store) == (0, 0, 0)

    bridge.on_predict = cancel_meanwhile
    await stream.run(bridge, store)  # type: ignore[arg-type]
    body = await answered[0]
    assert prediction.cancelled and body["cancel_mode"] == "quick_edit"
    assert stream.outcome == "cancelled"
    assert _counts(store) == (0, 0, 1)  # both messages and the thread it made are gone; the usage row stays
