"""Running answers are saved by the registry's timer, every stream that is due in one transaction;
the pump itself never commits per stream and second (at 128 streams that was 128 commits a second).

Real pumps (`ActiveStream.run`) and a real store on both engines; only LM Studio is a fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from proxy import registry as registry_module
from proxy import streams as streams_module
from proxy.bridge import Fragment
from proxy.registry import StreamRegistry
from proxy.store import Checkpoint, Store, Usage
from proxy.streams import ActiveStream

from .test_stream_rows import _Bridge, _stream


class _Held:
    """A prediction that yields its first texts, then holds (LM Studio still generating) until released."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.generated_tokens = 0
        self.cancel_sent = False
        self.sent_all = asyncio.Event()
        self.release = asyncio.Event()

    async def fragments(self) -> AsyncIterator[Fragment]:
        for text in self.texts:
            self.generated_tokens += 1
            yield Fragment(text, 1, "content")
        self.sent_all.set()
        await self.release.wait()

    async def cancel(self) -> None:
        self.cancel_sent = True
        self.release.set()

    def usage(self) -> Usage:
        return Usage(input_tokens=2, output_tokens=self.generated_tokens, stop_reason="eosFound")

    async def aclose(self) -> None:
        self.release.set()


def _saved(store: Store, stream: ActiveStream) -> list[tuple[str, bool]]:
    """The stream's assistant message as stored: (content, in progress)."""
    page = store.list_messages(stream.thread_id, limit=10, order="asc", after=None, before=None).rows
    mine = [m for m in page if m["role"] == "assistant"]
    return [(m["content"], bool((m.get("metadata") or {}).get("in_progress"))) for m in mine]


async def _running(store: Store, count: int, texts: list[str]) -> tuple[list[ActiveStream], list[_Held], list[Any]]:
    """`count` streams in one registry, each with `texts` relayed and LM Studio still generating."""
    first = _stream(store)
    registry = first.registry
    assert isinstance(registry, StreamRegistry)
    streams, predictions, tasks = [], [], []
    for i in range(count):
        stream = first if i == 0 else _stream(store, registry=registry)
        prediction = _Held(texts)
        tasks.append(asyncio.ensure_future(stream.run(_Bridge(store, prediction), store)))  # type: ignore[arg-type]
        streams.append(stream)
        predictions.append(prediction)
    for prediction in predictions:
        await prediction.sent_all.wait()
    return streams, predictions, tasks


async def _end(predictions: list[_Held], tasks: list[Any]) -> None:
    for prediction in predictions:
        prediction.release.set()
    await asyncio.gather(*tasks)


async def test_the_pump_never_saves_and_one_tick_saves_every_due_stream_in_one_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams_module, "CHECKPOINT_SECONDS", 0.0)  # every text is due at once
    calls: list[Sequence[Checkpoint]] = []
    save = store.checkpoints

    def counted(saves: Sequence[Checkpoint]) -> bool:
        calls.append(list(saves))
        return save(saves)

    monkeypatch.setattr(store, "checkpoints", counted)
    streams, predictions, tasks = await _running(store, 3, ["Hel", "lo"])
    assert calls == []  # the pumps relayed every token and saved nothing themselves
    assert all(_saved(store, s) == [] for s in streams)

    registry = streams[0].registry
    await registry.save_running(asyncio.get_running_loop().time())  # type: ignore[attr-defined]
    assert len(calls) == 1 and sorted(c.response_id for c in calls[0]) == sorted(s.spec.response_id for s in streams)
    assert all(_saved(store, s) == [("Hello", True)] for s in streams)

    await registry.save_running(asyncio.get_running_loop().time())  # type: ignore[attr-defined]
    assert len(calls) == 1  # nothing new arrived: nothing to save

    await _end(predictions, tasks)
    assert all(_saved(store, s) == [("Hello", False)] for s in streams)  # the end replaces the checkpoint


async def test_a_stream_is_due_a_second_after_its_round_began_and_never_after_a_stop(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    streams, predictions, tasks = await _running(store, 2, ["par", "tial"])
    kept, stopped = streams
    now = asyncio.get_running_loop().time()
    assert not kept.checkpoint_due(now)  # under CHECKPOINT_SECONDS since the round began
    later = now + streams_module.CHECKPOINT_SECONDS + 0.1
    assert kept.checkpoint_due(later)

    await stopped.request_cancel("cancel")  # outcome fixed at once; its text must not come back
    assert not stopped.checkpoint_due(later)
    await kept.registry.save_running(later)  # type: ignore[attr-defined]
    assert _saved(store, kept) == [("partial", True)]
    assert _saved(store, stopped) == []
    await _end(predictions, tasks)


async def test_a_failing_save_keeps_the_streams_and_the_timer_going(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams_module, "CHECKPOINT_SECONDS", 0.0)

    def broken(saves: Sequence[Checkpoint]) -> bool:
        raise RuntimeError("not a storage fault the store knows")

    monkeypatch.setattr(store, "checkpoints", broken)
    streams, predictions, tasks = await _running(store, 2, ["a", "b"])
    await streams[0].registry.save_running(asyncio.get_running_loop().time())  # type: ignore[attr-defined]
    await _end(predictions, tasks)
    assert all(s.outcome == "completed" for s in streams)


async def test_streams_are_saved_a_batch_at_a_time_and_one_that_ends_meanwhile_is_not_saved(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams_module, "CHECKPOINT_SECONDS", 0.0)
    monkeypatch.setattr(registry_module, "CHECKPOINT_BATCH", 2)
    streams, predictions, tasks = await _running(store, 3, ["x", "y"])
    last = streams[2]
    calls: list[list[str]] = []
    cancels: list[asyncio.Future[None]] = []
    save = store.checkpoints

    def counted(saves: Sequence[Checkpoint]) -> bool:
        calls.append([c.response_id for c in saves])
        if len(calls) == 1:  # the third stream is cancelled during the loop's turn between two batches
            cancels.append(asyncio.ensure_future(last.request_cancel("cancel")))
        return save(saves)

    monkeypatch.setattr(store, "checkpoints", counted)
    await streams[0].registry.save_running(asyncio.get_running_loop().time())  # type: ignore[attr-defined]
    await asyncio.gather(*cancels)
    assert calls == [[s.spec.response_id for s in streams[:2]]]  # one transaction for the first two ...
    assert last.outcome == "cancelled" and last.cancel_mode == "quick_edit"
    assert _saved(store, last) == []  # ... and the third, ended meanwhile, was not brought back
    assert all(_saved(store, s) == [("xy", True)] for s in streams[:2])
    await _end(predictions, tasks)
