"""Tool calls against the real lmstudio SDK: act() runs multi-round, hooks script the calls, records show them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import lmstudio
import pytest
from websockets.asyncio.client import connect

from proxy.simulator import Simulator

TIMEOUT = 10
MODELS = ["tooly:tools", "plain"]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def multiply(x: float, y: float) -> float:
    """Multiply two numbers."""
    return x * y


async def test_act_calls_the_only_tool_then_answers_with_its_result(simulator_factory: Any) -> None:
    simulator: Simulator = simulator_factory(models=MODELS)
    rounds: list[lmstudio.PredictionRoundResult] = []
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("tooly")
        result = await model.act("What is the sum of 123 and 3210?", [add], on_prediction_completed=rounds.append)
    assert result.rounds == 2
    assert rounds[0].content == "Let me use the add tool."
    assert "3333" in rounds[-1].content
    first, second = simulator.predictions()
    assert first["tools"] == ["add"] and first["stop_reason"] == "toolCalls"
    [call] = first["tool_calls"]
    assert call["type"] == "function" and call["name"] == "add" and call["arguments"] == {"a": 123, "b": 3210}
    assert isinstance(call["id"], str) and call["id"]
    # The second round saw the call and its result in the history, and answered in text.
    assert second["history"][-2]["tool_calls"][0]["name"] == "add"
    assert second["history"][-1]["tool_results"] == ["3333"]
    assert second["tool_calls"] == [] and second["stop_reason"] == "eosFound"


async def test_the_named_tool_is_called_and_the_hook_overrides(simulator_factory: Any) -> None:
    simulator: Simulator = simulator_factory(models=MODELS)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("tooly")
        await model.act("Please multiply 6 by 7", [add, multiply])
        await model.act("Something else [tool=add]", [add, multiply])
        text_only = await model.act("Just talk [tool=none]", [add, multiply])
    records = simulator.predictions()
    calls = [(c["name"], c["arguments"]) for r in records for c in r["tool_calls"]]
    assert calls == [("multiply", {"x": 6.0, "y": 7.0}), ("add", {"a": 1, "b": 1})]
    assert text_only.rounds == 1 and records[-1]["stop_reason"] == "eosFound"


async def test_a_failed_tool_call_generation_reaches_the_sdk(simulator_factory: Any) -> None:
    simulator: Simulator = simulator_factory(models=MODELS)
    failures: list[tuple[lmstudio.LMStudioPredictionError, object]] = []
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("tooly")
        with pytest.raises(lmstudio.LMStudioPredictionError, match="Failed to parse tool call"):
            await model.act(
                "Break [tool=fail]", [add], handle_invalid_tool_request=lambda e, r: failures.append((e, r))
            )
    assert len(failures) == 1 and failures[0][1] is None
    assert simulator.predictions()[0]["tool_calls"] == []


async def test_cancel_during_tool_call_generation(simulator_factory: Any) -> None:
    """The `stall_in_tool_call` fault holds a call mid-arguments; a cancel then ends it as userStopped."""
    simulator: Simulator = simulator_factory(models=MODELS)
    simulator.set_faults("tooly", stall_in_tool_call=True)
    tools = {
        "type": "toolArray",
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}],
    }
    create = {
        "type": "channelCreate",
        "endpoint": "predict",
        "channelId": 1,
        "creationParameter": {
            "modelSpecifier": {"type": "query", "query": {"identifier": "tooly"}},
            "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "add please"}]}]},
            "predictionConfigStack": {"layers": [{"layer": "apiOverride", "config": {"fields": [
                {"key": "llm.prediction.tools", "value": tools}
            ]}}]},
        },
    }  # fmt: skip
    seen: list[str] = []
    stop_reason = None
    async with asyncio.timeout(TIMEOUT), connect(f"ws://{simulator.host_port}/llm") as ws:
        await ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "t", "clientPasskey": "p"}))
        assert json.loads(await ws.recv())["success"] is True
        await ws.send(json.dumps(create))
        while True:
            message = json.loads(await ws.recv())
            kind = message.get("message", {}).get("type") or message["type"]
            seen.append(kind)
            if kind == "toolCallGenerationNameReceived":
                await ws.send(json.dumps({"type": "channelSend", "channelId": 1, "message": {"type": "cancel"}}))
            if kind == "success":
                stop_reason = message["message"]["stats"]["stopReason"]
            if message["type"] == "channelClose":
                break
    assert seen[-4:] == ["toolCallGenerationStart", "toolCallGenerationNameReceived", "success", "channelClose"]
    assert "toolCallGenerationEnd" not in seen
    assert stop_reason == "userStopped"
    [record] = simulator.predictions()
    assert record["status"] == "cancelled" and record["tool_calls"] == []
