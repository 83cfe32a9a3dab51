"""Cancellation through the real SDK: mid-stream, immediately, while loading, concurrently, and the trap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any, cast

import lmstudio
import pytest

from proxy.simulator import Simulator

TIMEOUT = 10
LONG = "Please write a lot [tokens=100000]"  # cannot finish before the cancel at any test speed


def _fragments(stream: lmstudio.AsyncPredictionStream) -> AsyncGenerator[lmstudio.LlmPredictionFragment]:
    """The SDK's fragment iterator (an async generator), so the test can close it explicitly."""
    return cast("AsyncGenerator[lmstudio.LlmPredictionFragment]", aiter(stream))


def _only(records: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(records) == 1, records
    return records[0]


async def test_cancel_mid_stream_keeps_partial_content(simulator: Simulator) -> None:
    """Seed 001: cancel() inside the loop, let the iteration drain, keep the partial result."""
    simulator.set_settings(tokens_per_second=200)
    seen: list[str] = []
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream(LONG)
        async for fragment in stream:
            seen.append(fragment.content)
            if len(seen) == 5:
                await stream.cancel()
    result = stream.result()
    assert result.stats.stop_reason == "userStopped"
    assert len(seen) == 5  # the SDK drops fragments after cancel(); iteration ends at `success`
    assert result.content == "".join(seen)
    assert result.stats.predicted_tokens_count is not None and result.stats.predicted_tokens_count >= 5
    record = _only(await simulator.wait_for_async(lambda ps: bool(ps) and ps[0]["status"] != "running"))
    assert record["status"] == "cancelled" and record["stop_reason"] == "userStopped"
    assert record["cancel_received_at"] is not None and record["tokens_after_cancel"] == 0
    assert record["tokens_generated"] == result.stats.predicted_tokens_count


async def test_cancel_right_after_start(simulator: Simulator) -> None:
    simulator.set_settings(prompt_seconds=30)  # the cancel surely lands before any token
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream(LONG)
        await stream.start()
        await stream.cancel()
        fragments = [f async for f in stream]
    assert fragments == []
    assert stream.result().stats.stop_reason == "userStopped"
    assert stream.result().content == ""
    record = _only(simulator.predictions())
    assert record["status"] == "cancelled"
    assert record["tokens_generated"] == 0 and record["tokens_after_cancel"] == 0


@pytest.mark.parametrize("tokens_per_second", [0.0, 500.0])
async def test_immediate_cancel_never_generates_after_it(simulator: Simulator, tokens_per_second: float) -> None:
    """The quick_edit window: whatever the speed, no token is produced once the cancel arrived."""
    simulator.set_settings(tokens_per_second=tokens_per_second)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        for _ in range(5):
            stream = await model.respond_stream(LONG)
            await stream.start()
            await stream.cancel()
            async for _fragment in stream:
                pass
            assert stream.result().stats.stop_reason == "userStopped"
    records = simulator.predictions()
    assert [r["status"] for r in records] == ["cancelled"] * 5
    assert [r["tokens_after_cancel"] for r in records] == [0] * 5


async def test_cancel_during_prompt_processing_and_twice(simulator: Simulator) -> None:
    simulator.set_settings(prompt_seconds=30)
    progress: list[float] = []
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream(LONG, on_prompt_processing_progress=progress.append)
        await stream.start()
        await simulator.wait_for_async(lambda ps: len(ps) == 1)
        await stream.cancel()
        await stream.cancel()  # duplicate: ignored, still exactly one `success`
        fragments = [f async for f in stream]
    assert fragments == [] and stream.result().stats.stop_reason == "userStopped"
    record = _only(simulator.predictions())
    assert record["status"] == "cancelled" and record["tokens_generated"] == 0


async def test_cancel_during_model_loading(simulator: Simulator) -> None:
    simulator.set_settings(load_seconds=30)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        # A handle to a downloaded-but-unloaded model: the predict channel loads it just in time.
        model = lmstudio.AsyncLLM("simulated-large", client.llm)
        stream = await model.respond_stream(LONG)
        await stream.start()
        await simulator.wait_for_async(lambda ps: len(ps) == 1)
        await stream.cancel()
        fragments = [f async for f in stream]
    assert fragments == [] and stream.result().stats.stop_reason == "userStopped"
    record = _only(simulator.predictions())
    assert record["status"] == "cancelled" and record["tokens_generated"] == 0
    assert {m["key"]: m["loaded"] for m in simulator.models()}["simulated-large"] is False


async def test_jit_load_on_predict_without_cancel(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = lmstudio.AsyncLLM("simulated-large", client.llm)
        result = await model.respond("Load me [tokens=3]")
    assert result.stats.stop_reason == "eosFound" and result.stats.predicted_tokens_count == 3
    assert {m["key"]: m["loaded"] for m in simulator.models()}["simulated-large"] is True


async def test_breaking_out_without_cancel_leaves_it_generating(simulator: Simulator) -> None:
    """Trap 1: leaving the loop sends nothing, so LM Studio (and the simulator) keeps generating."""
    simulator.set_settings(tokens_per_second=500)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream("Keep going [tokens=60]")
        async with contextlib.aclosing(_fragments(stream)) as fragments:
            async for _fragment in fragments:
                break
        records = await simulator.wait_for_async(lambda ps: bool(ps) and ps[0]["status"] != "running")
    record = _only(records)
    assert record["status"] == "completed" and record["stop_reason"] == "eosFound"
    assert record["tokens_generated"] == 60
    assert record["cancel_received_at"] is None


async def test_closing_the_client_mid_stream_stops_generation(simulator: Simulator) -> None:
    simulator.set_settings(tokens_per_second=200)
    async with asyncio.timeout(TIMEOUT):
        async with lmstudio.AsyncClient(simulator.host_port) as client:
            model = await client.llm.model("simulated-llm")
            stream = await model.respond_stream(LONG)
            async with contextlib.aclosing(_fragments(stream)) as fragments:
                async for _fragment in fragments:
                    break
        records = await simulator.wait_for_async(lambda ps: bool(ps) and ps[0]["status"] != "running")
    record = _only(records)
    assert record["status"] == "failed" and record["error"] == "connection closed"
    assert record["cancel_received_at"] is None


async def test_three_concurrent_predictions_one_cancelled(simulator: Simulator) -> None:
    simulator.set_settings(tokens_per_second=300)

    async def consume(stream: lmstudio.AsyncPredictionStream, cancel: bool) -> lmstudio.PredictionResult:
        async for _fragment in stream:
            if cancel:
                await stream.cancel()
        return stream.result()

    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        streams = [
            await model.respond_stream("first [tokens=30]"),
            await model.respond_stream(LONG),
            await model.respond_stream("third [tokens=30]"),
        ]
        for stream in streams:
            await stream.start()
        results = await asyncio.gather(*(consume(s, i == 1) for i, s in enumerate(streams)))
    assert [r.stats.stop_reason for r in results] == ["eosFound", "userStopped", "eosFound"]
    assert results[0].stats.predicted_tokens_count == results[2].stats.predicted_tokens_count == 30
    by_history = {r["history"][0]["text"]: r for r in simulator.predictions()}
    assert by_history["first [tokens=30]"]["status"] == "completed"
    assert by_history[LONG]["status"] == "cancelled" and by_history[LONG]["tokens_after_cancel"] == 0
    assert by_history["third [tokens=30]"]["status"] == "completed"


def test_sync_cancel_mid_stream(simulator: Simulator) -> None:
    simulator.set_settings(tokens_per_second=200)
    with lmstudio.Client(simulator.host_port) as client:
        model = client.llm.model("simulated-llm")
        stream = model.respond_stream(LONG)
        for count, _fragment in enumerate(stream, start=1):
            if count == 3:
                stream.cancel()
    assert stream.result().stats.stop_reason == "userStopped"
    record = simulator.wait_for(lambda ps: bool(ps) and ps[0]["status"] != "running", TIMEOUT)[0]
    assert record["status"] == "cancelled" and record["tokens_after_cancel"] == 0
