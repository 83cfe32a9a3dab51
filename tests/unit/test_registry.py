"""The stream registry's memory of ended streams: bounded, whatever the churn."""

from __future__ import annotations

from pathlib import Path

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
