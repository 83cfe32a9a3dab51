"""The offline model hub (`repository` namespace) against the real lmstudio SDK: search, options, download."""

from __future__ import annotations

import asyncio
from typing import Any

import lmstudio
import pytest

from proxy.simulator import ModelSpec, Simulator

TIMEOUT = 10


async def test_search_options_and_download_with_progress(simulator_factory: Any) -> None:
    sim: Simulator = simulator_factory(
        models=[ModelSpec("smollm2-135m-instruct", publisher="lmstudio-community", loaded=False), "other"]
    )
    progress: list[int] = []
    finalized: list[None] = []
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(sim.host_port) as client:
        found = await client.repository.search_models("SmolLM2-135M")
        nothing = await client.repository.search_models("no-such-model")
        [option] = await found[0].get_download_options()
        key = await option.download(
            on_progress=lambda update: progress.append(update.downloaded_bytes),
            on_finalize=lambda: finalized.append(None),
        )
        model = await client.llm.model(key)  # what a download returns is loadable
    assert [m.search_result.name for m in found] == ["lmstudio-community/smollm2-135m-instruct-GGUF"]
    assert nothing == []
    assert option.info.download_identifier == "lmstudio-community/smollm2-135m-instruct-GGUF/smollm2-135m-instruct.gguf"
    assert option.info.recommended is True and option.info.fit_estimation == "fullGPUOffload"
    assert key == "smollm2-135m-instruct" and model.identifier == key
    assert progress == sorted(progress) and progress[-1] == option.info.size_bytes
    assert finalized == [None]


async def test_unknown_repository_and_download_are_errors(simulator: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(simulator.host_port) as client:
        session = client.repository
        [result] = await session.search_models("simulated-llm")
        stranger = type(result)({"name": "x/y", "identifier": {"type": "hf", "identifier": "x/y"}}, session)
        with pytest.raises(lmstudio.LMStudioServerError, match="model hub"):
            await stranger.get_download_options()
        [option] = await result.get_download_options()
        option._data.download_identifier = "nobody/nothing.gguf"  # a stale option
        with pytest.raises(lmstudio.LMStudioServerError, match="Cannot find a download"):
            await option.download()
