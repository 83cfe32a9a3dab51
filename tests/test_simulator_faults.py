"""Fault injection surfaces as the SDK errors LM Studio would cause, and nothing hangs; HTTP controls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import lmstudio
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from proxy.simulator import Faults, Simulator

TIMEOUT = 10
LONG = "Please write a lot [tokens=100000]"


async def test_fail_after_tokens_raises_server_error(simulator: Simulator) -> None:
    simulator.set_faults("simulated-llm", fail_after_tokens=3)
    seen = []
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream("fail please")
        with pytest.raises(lmstudio.LMStudioServerError, match="Simulated failure after 3 tokens"):
            async for fragment in stream:
                seen.append(fragment)
        # Only that model is affected; the socket survives.
        other = await client.llm.model("simulated-reasoner")
        assert (await other.respond("fine [tokens=2]")).stats.stop_reason == "eosFound"
    assert len(seen) == 3
    record = simulator.predictions()[0]
    assert record["status"] == "failed" and record["tokens_generated"] == 3


async def test_drop_after_tokens_raises_websocket_error(simulator: Simulator) -> None:
    simulator.set_faults(None, drop_after_tokens=2)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream("drop please")
        with pytest.raises(lmstudio.LMStudioWebsocketError):
            async for _fragment in stream:
                pass
    record = simulator.predictions()[0]
    assert record["status"] == "failed" and record["tokens_generated"] == 2


async def test_stall_honours_cancel(simulator: Simulator) -> None:
    simulator.set_faults(None, stall=True)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream("stall")
        await stream.start()
        await simulator.wait_for_async(lambda ps: len(ps) == 1)
        await stream.cancel()
        fragments = [f async for f in stream]
    assert fragments == [] and stream.result().stats.stop_reason == "userStopped"
    assert simulator.predictions()[0]["status"] == "cancelled"


async def test_stall_ignoring_cancel_needs_a_bounded_drain(simulator: Simulator) -> None:
    """Trap 3: if LM Studio never answers the cancel, only the caller's own timeout ends the wait."""
    simulator.set_faults(None, stall=True, ignore_cancel=True)
    async with lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream("stall forever")
        await stream.start()
        await stream.cancel()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                async for _fragment in stream:
                    pass
    record = (await simulator.wait_for_async(lambda ps: bool(ps) and ps[0]["status"] != "running"))[0]
    assert record["cancel_received_at"] is not None
    assert record["status"] == "failed" and record["error"] == "connection closed"


async def test_ignore_cancel_keeps_generating(simulator: Simulator) -> None:
    simulator.set_settings(tokens_per_second=1000)
    simulator.set_faults(None, ignore_cancel=True)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream("ignore me [tokens=40]")
        async for _fragment in stream:
            await stream.cancel()
    assert stream.result().stats.stop_reason == "eosFound"
    record = simulator.predictions()[0]
    assert record["status"] == "completed" and record["tokens_generated"] == 40
    assert record["cancel_received_at"] is not None and record["tokens_after_cancel"] > 0


async def test_refuse_connections(simulator: Simulator) -> None:
    simulator.set_faults(None, refuse_connections=True)
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(lmstudio.LMStudioClientError, match="not reachable"):
            async with lmstudio.AsyncClient(simulator.host_port):
                pass
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://{simulator.host_port}/llm"):
                pass
        simulator.set_faults(None)
        async with lmstudio.AsyncClient(simulator.host_port) as client:
            assert len(await client.llm.list_loaded()) == 2


async def test_faults_at_construction(simulator_factory: Callable[..., Simulator]) -> None:
    sim = simulator_factory(faults={"simulated-llm": Faults(fail_after_tokens=0)})
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(sim.host_port) as client:
        model = await client.llm.model("simulated-llm")
        with pytest.raises(lmstudio.LMStudioServerError):
            await model.respond("hi")


async def test_http_controls(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), httpx.AsyncClient(base_url=simulator.base_url) as http:
        assert (await http.get("/lmstudio-greeting")).json() == {"lmstudio": True}
        models = (await http.get("/simulator/models")).json()
        assert {m["key"]: m["loaded"] for m in models} == {
            "simulated-llm": True,
            "simulated-reasoner": True,
            "simulated-large": False,
        }
        reply = await http.post("/simulator/faults", json={"model": "simulated-llm", "fail_after_tokens": 1})
        assert reply.status_code == 200 and reply.json()["simulated-llm"]["fail_after_tokens"] == 1
        assert simulator.predictions() == []
        bad = await http.post("/simulator/faults", json={"model": None, "explode": True})
        assert bad.status_code == 400 and "explode" in bad.json()["error"]
        bad = await http.post("/simulator/faults", content=b"not json")
        assert bad.status_code == 400
        reply = await http.post("/simulator/settings", json={"tokens_per_second": 1000, "load_seconds": 0})
        assert reply.json()["*"]["tokens_per_second"] == 1000
        assert (await http.post("/simulator/settings", json={"tokens_per_second": -1})).status_code == 400
        async with lmstudio.AsyncClient(simulator.host_port) as client:
            model = await client.llm.model("simulated-llm")
            with pytest.raises(lmstudio.LMStudioServerError):
                await model.respond("one token then failure")
        records = (await http.get("/simulator/predictions")).json()
        assert [(r["model"], r["status"], r["tokens_generated"]) for r in records] == [("simulated-llm", "failed", 1)]
        assert set(records[0]) >= {
            "id", "model", "status", "tokens_generated", "cancel_received_at", "tokens_after_cancel",
            "started_at", "finished_at", "history", "config", "stop_reason",
        }  # fmt: skip
        assert (await http.delete("/simulator/predictions")).status_code == 204
        assert (await http.get("/simulator/predictions")).json() == []


def test_wait_for_times_out(simulator: Simulator) -> None:
    with pytest.raises(TimeoutError):
        simulator.wait_for(lambda ps: len(ps) > 0, timeout=0.05)


async def test_stop_closes_open_websockets(simulator_factory: Callable[..., Simulator]) -> None:
    sim = simulator_factory(tokens_per_second=100)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(sim.host_port) as client:
        model = await client.llm.model("simulated-llm")
        stream = await model.respond_stream(LONG)
        await stream.start()
        await sim.wait_for_async(lambda ps: bool(ps) and ps[0]["tokens_generated"] > 0)
        await asyncio.to_thread(sim.stop)
        with pytest.raises(lmstudio.LMStudioWebsocketError):
            async for _fragment in stream:
                pass
    assert sim.predictions()[0]["status"] == "failed"


async def test_per_model_settings(simulator: Simulator) -> None:
    simulator.set_settings("simulated-large", load_seconds=30)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        # The global load time stays fast: the reasoner unloads and reloads at once.
        await client.llm.unload("simulated-reasoner")
        await client.llm.model("simulated-reasoner")
        model = lmstudio.AsyncLLM("simulated-large", client.llm)
        stream = await model.respond_stream("slow load")
        await stream.start()
        await simulator.wait_for_async(lambda ps: len(ps) == 1)
        await stream.cancel()
        async for _fragment in stream:
            pass
    assert stream.result().stats.stop_reason == "userStopped"
    assert {m["key"]: m["loaded"] for m in simulator.models()} == {
        "simulated-llm": True,
        "simulated-reasoner": True,
        "simulated-large": False,
    }
