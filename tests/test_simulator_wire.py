"""The simulator's wire protocol, raw: replay the recorded sample exchange and probe envelope edge cases."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from proxy.simulator import Simulator

TIMEOUT = 5
# The recorded exchange from the project's LM Studio spec, vendored beside the tests.
SAMPLE = Path(__file__).parent / "data" / "lmstudio-wire-sample.jsonl"
SERVER_TYPES = {"channelSend", "channelClose", "channelError", "rpcResult", "rpcError", "communicationWarning"}
AUTH = {"authVersion": 1, "clientIdentifier": "test-client", "clientPasskey": "test-passkey"}


async def _recv(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert len(raw) < 64 * 1024
    message = json.loads(raw)
    assert isinstance(message, dict)
    return message


async def _open(sim: Simulator, namespace: str = "llm") -> ClientConnection:
    ws = await connect(f"ws://{sim.host_port}/{namespace}")
    await ws.send(json.dumps(AUTH))
    assert await _recv(ws) == {"success": True}
    return ws


# Fields newer LM Studio builds send (lmstudio-js 2.x requires them); the recorded sample predates them.
NEWER_FIELDS = frozenset(
    {"publisher", "indexedModelIdentifier", "quantization", "deviceIdentifier", "lastUsedTime", "ttlMs", "details"}
)


def _shape(message: dict[str, Any], ignore: frozenset[str] | set[str] = frozenset()) -> tuple[Any, ...]:
    """What must match the real exchange: message kinds and key sets (less `ignore`d keys), not values."""
    inner = message.get("message", {})
    nested = tuple(
        sorted((k, tuple(sorted(set(v) - ignore))) for k, v in inner.items() if isinstance(v, dict) and k not in ignore)
    )
    keys = tuple(sorted(set(inner) - ignore))
    return (message.get("type"), message.get("channelId"), inner.get("type"), keys, nested)


def _collapse(shapes: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Runs of one kind (progress steps, fragments) collapse to one: their count is timing-dependent."""
    return [s for i, s in enumerate(shapes) if i == 0 or s != shapes[i - 1]]


async def test_replay_of_the_recorded_exchange_matches(simulator: Simulator) -> None:
    simulator.set_settings(tokens_per_second=50)  # slow enough that the sample's mid-stream cancel lands
    entries = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    entries = [e for e in entries if e["ns"] == "llm" and e["dir"] in ("rx", "tx")]
    expected = [_shape(e["msg"]) for e in entries[2:] if e["dir"] == "tx"]  # after the auth pair
    got: list[tuple[Any, ...]] = []
    async with asyncio.timeout(TIMEOUT * 2):
        ws = await connect(f"ws://{simulator.host_port}/llm")
        await ws.send(json.dumps(entries[0]["msg"]))
        assert await _recv(ws) == entries[1]["msg"]
        pending = [e for e in entries[2:] if e["dir"] == "rx"]
        for i, entry in enumerate(pending):
            await ws.send(json.dumps(entry["msg"]))
            nxt = pending[i + 1]["msg"] if i + 1 < len(pending) else None
            channel = entry["msg"].get("channelId")
            while True:
                message = await _recv(ws)
                assert message["type"] in SERVER_TYPES
                got.append(_shape(message, NEWER_FIELDS))
                if message["type"] == "channelClose" and message["channelId"] == channel:
                    break
                # The sample cancels its third channel after the first fragment.
                if nxt is not None and nxt.get("type") == "channelSend" and message["message"]["type"] == "fragment":
                    break
        await ws.close()
    assert len(_collapse(expected)) == 10  # alreadyLoaded, close, then 2 x (progress, fragment, success, close)
    assert _collapse(got) == _collapse(expected)


async def test_unknown_rpc_is_an_error_unknown_channel_a_warning(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT):
        ws = await _open(simulator)
        await ws.send(json.dumps({"type": "rpcCall", "endpoint": "noSuchThing", "callId": 7}))
        reply = await _recv(ws)
        assert reply["type"] == "rpcError" and reply["callId"] == 7 and "noSuchThing" in reply["error"]["title"]
        await ws.send(json.dumps({"type": "channelCreate", "endpoint": "nope", "channelId": 3}))
        reply = await _recv(ws)
        # As LM Studio: a warning naming the endpoint, and the socket (and channel) stay open.
        assert reply["type"] == "communicationWarning" and "nope" in reply["warning"]
        await ws.send(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 8}))
        reply = await _recv(ws)
        assert reply["type"] == "rpcResult" and [m["identifier"] for m in reply["result"]] == [
            "simulated-llm",
            "simulated-reasoner",
        ]
        await ws.close()


async def test_system_namespace_lists_downloaded_models(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT):
        ws = await _open(simulator, "system")
        await ws.send(json.dumps({"type": "rpcCall", "endpoint": "listDownloadedModels", "callId": 1}))
        reply = await _recv(ws)
        await ws.close()
    assert [(m["type"], m["modelKey"]) for m in reply["result"]] == [
        ("llm", "simulated-llm"),
        ("llm", "simulated-reasoner"),
        ("llm", "simulated-large"),
    ]


async def test_bad_auth_is_rejected(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT):
        ws = await connect(f"ws://{simulator.host_port}/llm")
        await ws.send(json.dumps({"authVersion": 2}))
        reply = await _recv(ws)
        await ws.close()
    assert reply["success"] is False and isinstance(reply["error"], str)


async def test_duplicate_cancel_gives_exactly_one_success(simulator: Simulator) -> None:
    predict = {
        "type": "channelCreate",
        "endpoint": "predict",
        "channelId": 1,
        "creationParameter": {
            "modelSpecifier": {"type": "query", "query": {"identifier": "simulated-llm"}},
            "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi [tokens=100000]"}]}]},
            "predictionConfigStack": {"layers": []},
        },
    }
    cancel = {"type": "channelSend", "channelId": 1, "message": {"type": "cancel"}}
    async with asyncio.timeout(TIMEOUT):
        ws = await _open(simulator)
        for message in (predict, cancel, cancel):
            await ws.send(json.dumps(message))
        received: list[dict[str, Any]] = []
        while not received or received[-1]["type"] != "channelClose":
            received.append(await _recv(ws))
        await ws.send(json.dumps(cancel))  # after the end: ignored, no reply
        # Messages are ordered: anything stray would arrive before this RPC's result.
        await ws.send(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1}))
        received.append(await _recv(ws))
        await ws.close()
    kinds = [m.get("message", {}).get("type", m["type"]) for m in received]
    assert kinds.count("success") == 1
    assert kinds[-2:] == ["channelClose", "rpcResult"]
    success = next(m["message"] for m in received if m.get("message", {}).get("type") == "success")
    assert success["stats"]["stopReason"] == "userStopped"
    assert set(success) == {"type", "stats", "modelInfo", "loadModelConfig", "predictionConfig"}
    assert simulator.predictions()[0]["tokens_after_cancel"] == 0
