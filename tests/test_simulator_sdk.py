"""The real lmstudio SDK (async and sync) against the simulator: listings, loading, streaming, stats."""

from __future__ import annotations

import asyncio
import re
import warnings

import lmstudio
import pytest

from proxy.simulator import Simulator

TIMEOUT = 10


async def test_async_listings(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        loaded = [m.identifier for m in await client.llm.list_loaded()]
        downloaded = await client.list_downloaded_models()
        llms = await client.llm.list_downloaded()
        info = await client.llm.get_model_info("simulated-llm")
    assert loaded == ["simulated-llm", "simulated-reasoner"]
    assert [m.model_key for m in downloaded] == ["simulated-llm", "simulated-reasoner", "simulated-large"]
    assert {m.type for m in downloaded} == {"llm"}
    assert len(llms) == 3
    assert info.identifier == "simulated-llm"
    assert info.context_length == 4096


async def test_async_load_with_progress_then_stream(simulator: Simulator) -> None:
    simulator.set_settings(load_seconds=0.2)
    progress: list[float] = []
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-large", on_load_progress=progress.append)
        assert "simulated-large" in [m.identifier for m in await client.llm.list_loaded()]
        stream = await model.respond_stream("Tell me something [tokens=12]", config={"temperature": 0.2})
        fragments = [fragment async for fragment in stream]
    result = stream.result()
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress) and len(progress) > 3
    assert len(fragments) == 12
    assert result.content == "".join(f.content for f in fragments)
    stats = result.stats
    assert stats.stop_reason == "eosFound"
    assert stats.predicted_tokens_count == sum(f.tokens_count for f in fragments) == 12
    assert stats.prompt_tokens_count is not None and stats.prompt_tokens_count > 0
    assert stats.total_tokens_count == stats.prompt_tokens_count + 12
    assert stats.time_to_first_token_sec is not None and stats.tokens_per_second is not None
    assert result.model_info.model_key == "simulated-large"
    record = simulator.predictions()[0]
    assert record["status"] == "completed" and record["tokens_generated"] == 12
    assert record["history"] == [{"role": "user", "text": "Tell me something [tokens=12]"}]
    assert record["config"]["llm.prediction.temperature"] == 0.2


async def test_default_answer_is_deterministic_markdown(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        first = await model.respond("What is the meaning of life?")
        again = await model.respond("What is the meaning of life?")
        other = await model.respond("Something else entirely")
    assert first.content == again.content != other.content
    assert first.stats.predicted_tokens_count == 24
    assert re.match(r"## \w+", first.content)
    assert re.search(r"\*\*\w+\*\*", first.content)
    assert re.search(r"`\w+\(\)`", first.content)
    assert "\n- " in first.content


async def test_history_and_config_are_recorded(simulator: Simulator) -> None:
    chat = lmstudio.Chat("You are terse.")
    chat.add_user_message("First question")
    chat.add_assistant_response("First answer")
    chat.add_user_message("Second question [tokens=3]")
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        result = await model.respond(chat, config={"maxTokens": 100, "stopStrings": ["zzz"]})
    assert result.stats.predicted_tokens_count == 3
    (record,) = simulator.predictions()
    assert record["history"] == [
        {"role": "system", "text": "You are terse."},
        {"role": "user", "text": "First question"},
        {"role": "assistant", "text": "First answer"},
        {"role": "user", "text": "Second question [tokens=3]"},
    ]
    assert record["config"]["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 100}
    assert record["config"]["llm.prediction.stopStrings"] == ["zzz"]


async def test_max_tokens_and_stop_strings(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        full = await model.respond("Stop test")
        capped = await model.respond("Stop test", config={"maxTokens": 5})
        stop = full.content[30:34]  # somewhere in the middle of the answer
        stopped = await model.respond("Stop test", config={"stopStrings": [stop]})
    assert capped.stats.stop_reason == "maxPredictedTokensReached"
    assert capped.stats.predicted_tokens_count == 5
    assert full.content.startswith(capped.content)
    assert stopped.stats.stop_reason == "stopStringFound"
    assert stopped.content == full.content[: full.content.index(stop)]
    assert stop not in stopped.content


async def test_reasoning_model_emits_think_fragments(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-reasoner")
        stream = await model.respond_stream("Think first [tokens=4]")
        fragments = [f async for f in stream]
    kinds = [f.reasoning_type for f in fragments]
    assert kinds[0] == "reasoningStartTag" and fragments[0].content == "<think>"
    end = kinds.index("reasoningEndTag")
    assert fragments[end].content == "</think>"
    assert set(kinds[1:end]) == {"reasoning"} and end > 3
    assert set(kinds[end + 1 :]) == {"none"}
    stats = stream.result().stats
    assert stats.predicted_tokens_count == sum(f.tokens_count for f in fragments) == len(fragments)
    assert stats.predicted_tokens_count > 4  # reasoning tokens count too


async def test_unknown_model_raises_model_not_found(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await client.llm.model("no-such-model")
        with pytest.raises(lmstudio.LMStudioServerError):
            await client.llm.get_model_info("simulated-large")  # downloaded, not loaded


async def test_token_rpcs_and_unload(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        model = await client.llm.model("simulated-llm")
        assert await model.count_tokens("Hello, simulated world") == 4
        assert len(await model.tokenize("Hello, simulated world")) == 4
        assert await model.get_context_length() == 4096
        template = await model.apply_prompt_template(lmstudio.Chat.from_history("Hi there"))
        assert "Hi there" in template
        await model.unload()
        assert [m.identifier for m in await client.llm.list_loaded()] == ["simulated-reasoner"]
    assert {m["key"]: m["loaded"] for m in simulator.models()}["simulated-llm"] is False


async def test_no_warnings_from_the_sdk(simulator: Simulator) -> None:
    simulator.set_settings(tokens_per_second=500)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
            large = await client.llm.model("simulated-large", on_load_progress=lambda _: None)
            await large.respond("hi [tokens=3]", on_prompt_processing_progress=lambda _: None)
            reasoner = await client.llm.model("simulated-reasoner")
            stream = await reasoner.respond_stream("hi [tokens=200]")
            async for _ in stream:
                await stream.cancel()
            await stream.cancel()
    assert stream.result().stats.stop_reason == "userStopped"
    assert [str(w.message) for w in caught] == []


def test_sync_client(simulator: Simulator) -> None:
    progress: list[float] = []
    with lmstudio.Client(simulator.host_port) as client:
        assert [m.identifier for m in client.llm.list_loaded()] == ["simulated-llm", "simulated-reasoner"]
        assert len(client.list_downloaded_models()) == 3
        model = client.llm.model("simulated-large", on_load_progress=progress.append)
        stream = model.respond_stream("Sync please [tokens=7]")
        fragments = list(stream)
        result = stream.result()
    assert progress[-1] == 1.0
    assert result.stats.stop_reason == "eosFound"
    assert result.stats.predicted_tokens_count == sum(f.tokens_count for f in fragments) == 7
    assert simulator.predictions()[0]["status"] == "completed"
