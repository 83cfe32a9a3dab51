"""The stream registry: its memory of ended streams (bounded, whatever the churn), and how it
notices that the proxy is saturated."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from proxy import registry as registry_module
from proxy.backends import Backends
from proxy.config import Config
from proxy.metrics import Metrics
from proxy.registry import StreamRegistry
from proxy.spec import StreamSpec
from proxy.store import Store, Usage
from proxy.streams import ActiveStream


def _spec(i: int) -> StreamSpec:
    return StreamSpec(
        owner="o", thread_id=f"thrd_{i}", response_id=f"resp_{i}", message_ids=[], thread_created=True,
        model="m", messages=[], prediction_config={}, output_mode="text", trace_id="t",
    )  # fmt: skip


async def test_cancelled_streams_are_remembered_within_a_bound(tmp_path: Path) -> None:
    config = Config()
    store = Store(tmp_path / "db.sqlite3")
    registry = StreamRegistry(config, store, Backends(config.lmstudio), Metrics())
    try:
        for i in range(3 * StreamRegistry.REMEMBER_CANCELS):
            stream = ActiveStream(_spec(i), registry)
            registry.streams[stream.thread_id] = stream
            stream.outcome, stream.stop_reason = "cancelled", "disconnect" if i % 2 else "cancel"
            registry.finished(stream, Usage())
        assert not registry.streams
        assert len(registry._ended) <= StreamRegistry.REMEMBER_CANCELS
        # The newest are the ones kept: a repeated cancel right after a stop still gets its answer.
        newest = f"thrd_{3 * StreamRegistry.REMEMBER_CANCELS - 1}"
        assert newest in registry._ended and "thrd_0" not in registry._ended
    finally:
        store.close()


def _registry(tmp_path: Path) -> tuple[StreamRegistry, Store]:
    config = Config()
    store = Store(tmp_path / "db.sqlite3")
    return StreamRegistry(config, store, Backends(config.lmstudio), Metrics()), store


async def test_a_saturated_proxy_writes_half_as_often_and_goes_back_when_it_is_not(tmp_path: Path) -> None:
    registry, store = _registry(tmp_path)
    try:
        for i in range(128):
            stream = ActiveStream(_spec(i), registry)
            registry.streams[stream.thread_id] = stream
        assert registry.write_interval == 0.1  # ten writes a second per stream at most
        registry.note_busy(0.85)
        assert not registry.saturated and registry.write_interval == 0.1
        registry.note_busy(0.95)
        assert registry.saturated and registry.write_interval == 0.2
        registry.note_busy(0.8)  # between the two thresholds: it stays
        assert registry.saturated
        registry.note_busy(0.7)
        assert not registry.saturated and registry.write_interval == 0.1

        for thread_id in list(registry.streams)[32:]:
            del registry.streams[thread_id]
        assert registry.write_interval == 0.032
        registry.note_busy(1.0)
        assert registry.write_interval == 0.064
        for thread_id in list(registry.streams)[1:]:
            del registry.streams[thread_id]
        assert registry.write_interval == 0.004  # the floor, saturated or not
    finally:
        store.close()


def _timer_for_one_stream(registry: StreamRegistry) -> tuple[str, asyncio.Task[None]]:
    """A stream registered (never started) and the registry's timer running for it."""
    stream = ActiveStream(_spec(0), registry)
    registry.streams[stream.thread_id] = stream
    return stream.thread_id, asyncio.ensure_future(registry._tick())


async def test_the_timer_measures_how_busy_the_event_loop_thread_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "CHECKPOINT_SECONDS", 0.02)  # a tick every 10 ms
    registry, store = _registry(tmp_path)
    measured = asyncio.Event()
    seen: list[float] = []
    note = registry.note_busy

    def noted(busy: float) -> None:
        seen.append(busy)
        note(busy)
        measured.set()

    monkeypatch.setattr(registry, "note_busy", noted)
    try:
        thread_id, ticker = _timer_for_one_stream(registry)
        async with asyncio.timeout(10):
            await measured.wait()  # a first tick, so the next one measures the spin below alone
            measured.clear()
            spun = time.thread_time() + 0.05
            while time.thread_time() < spun:  # the loop's thread computes, as under saturation
                pass
            await measured.wait()
            assert seen[-1] > 0.5  # (1.0 on a quiet machine; the thresholds are tested above)
            measured.clear()
            await measured.wait()  # a tick of an idle loop
            assert seen[-1] < 0.5
            registry.note_busy(1.0)
            assert registry.saturated
            del registry.streams[thread_id]  # no streams: the timer stops, and forgets it
            await ticker
        assert not registry.saturated
    finally:
        store.close()


async def test_saturation_is_measured_more_often_than_the_checkpoints_are_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of streams lasting a second must not run half of it unsaturated: how busy the loop
    is gets measured every BUSY_WINDOW, the heartbeats and checkpoints keep their own period."""
    monkeypatch.setattr(registry_module, "BUSY_WINDOW", 0.01)  # checkpoints: every 0.5 s (the default)
    registry, store = _registry(tmp_path)
    events: list[str] = []
    saved = asyncio.Event()
    note, save = registry.note_busy, registry.save_running

    def noted(busy: float) -> None:
        events.append("busy")
        note(busy)

    async def saving(now: float) -> None:
        events.append("save")
        saved.set()
        await save(now)

    monkeypatch.setattr(registry, "note_busy", noted)
    monkeypatch.setattr(registry, "save_running", saving)
    try:
        thread_id, ticker = _timer_for_one_stream(registry)
        async with asyncio.timeout(10):
            await saved.wait()
            saved.clear()
            await saved.wait()
        del registry.streams[thread_id]
        await ticker
        first, second = [i for i, event in enumerate(events) if event == "save"][:2]
        # 50 windows to a period on a quiet machine; a stalled one still measures several.
        assert first >= 5 and second - first >= 5, events[: second + 1]
    finally:
        store.close()
