"""The model catalogue, embeddings and files against the real lmstudio SDK: a model list file, path queries,
identifiers, JIT unloading, error codes, presets, draft models, images and embedding vectors."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmstudio
import pytest
from websockets.asyncio.client import connect

from proxy.simulator import ModelSpec, Simulator
from proxy.simulator.catalogue import Catalogue
from proxy.simulator.models import load_model_file

TIMEOUT = 10
SUITE_MODELS = Path(__file__).parent / "lmstudio_suite" / "models.toml"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


@pytest.fixture
def mirrored(simulator_factory: Any) -> Simulator:
    """A simulator mirroring the LM Studio the official SDK test suite expects."""
    sim: Simulator = simulator_factory(models=load_model_file(SUITE_MODELS))
    return sim


async def test_path_queries_resolve_and_info_has_the_js_2_fields(mirrored: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(mirrored.host_port) as client:
        model = await client.llm.model("hugging-quants/llama-3.2-1b-instruct")
        vlm = await client.llm.model("ZiangWu/MobileVLM_V2-1.7B-GGUF")
        info = await model.get_info()
    assert model.identifier == "llama-3.2-1b-instruct" and vlm.identifier == "mobilevlm_v2-1.7b"
    assert info.path.startswith("hugging-quants/Llama-3.2-1B") and info.size_bytes == 1321083008
    infos = {m["modelKey"]: m for m in await _raw_loaded(mirrored)}
    llama = infos["llama-3.2-1b-instruct"]
    assert llama["publisher"] == "hugging-quants" and llama["quantization"] == {"name": "Q8_0", "bits": 8}
    assert {"indexedModelIdentifier", "deviceIdentifier", "lastUsedTime", "ttlMs"} <= set(llama)
    assert infos["mobilevlm_v2-1.7b"]["vision"] is True
    assert infos["qwen2.5-7b-instruct-1m"]["trainedForToolUse"] is True


async def _raw_loaded(sim: Simulator) -> list[dict[str, Any]]:
    """`listLoaded` as it goes over the wire (the SDK drops the fields it does not know)."""
    async with connect(f"ws://{sim.host_port}/llm") as ws:
        await ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "t", "clientPasskey": "p"}))
        await ws.recv()
        await ws.send(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1}))
        llms: list[dict[str, Any]] = json.loads(await ws.recv())["result"]
    async with connect(f"ws://{sim.host_port}/embedding") as ws:
        await ws.send(json.dumps({"authVersion": 1, "clientIdentifier": "t", "clientPasskey": "p"}))
        await ws.recv()
        await ws.send(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1}))
        embeddings: list[dict[str, Any]] = json.loads(await ws.recv())["result"]
    return llms + embeddings


async def test_identifiers_duplicates_and_unload_errors(mirrored: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(mirrored.host_port) as client:
        llm = client.llm
        with pytest.raises(lmstudio.LMStudioServerError, match="already exists"):
            await llm.load_new_instance("hugging-quants/llama-3.2-1b-instruct", "llama-3.2-1b-instruct")
        second = await llm.load_new_instance("llama-3.2-1b-instruct", ttl=60)
        named = await llm.load_new_instance("llama-3.2-1b-instruct", "my-llama")
        info = await second.get_info()
        loaded = [m.identifier for m in await llm.list_loaded()]
        await llm.unload(second.identifier)
        await llm.unload("my-llama")
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await llm.unload("No such model")
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await client.embedding.unload("llama-3.2-1b-instruct")  # namespaces do not mix
    assert second.identifier == "llama-3.2-1b-instruct:2" and named.identifier == "my-llama"
    assert info.identifier == "llama-3.2-1b-instruct:2"
    assert loaded.count("llama-3.2-1b-instruct:2") == 1 and "my-llama" in loaded
    assert [i["ttlMs"] for i in await _raw_loaded(mirrored) if i["identifier"] == "llama-3.2-1b-instruct"] == [None]


async def test_a_jit_load_unloads_the_other_jit_model(mirrored: Simulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(mirrored.host_port) as client:
        await client.embedding.unload("text-embedding-nomic-embed-text-v1.5")
        first = await client.embedding.model("text-embedding-nomic-embed-text-v1.5", ttl=300)
        second = await client.llm.model("smollm2-135m-instruct", ttl=300)
        with pytest.raises(lmstudio.LMStudioModelNotFoundError):
            await first.get_info()
        assert (await second.get_info()).identifier == "smollm2-135m-instruct"
    assert any("Unloading other JIT model" in r.getMessage() for r in caplog.records)
    [smol] = [i for i in await _raw_loaded(mirrored) if i["modelKey"] == "smollm2-135m-instruct"]
    assert smol["ttlMs"] == 300_000


async def test_embeddings_are_deterministic_vectors_of_the_model_dimension(mirrored: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(mirrored.host_port) as client:
        model = await client.embedding.model("nomic-ai/nomic-embed-text-v1.5")
        one, two = await model.embed(["Hello", "Goodbye"])
        again = await model.embed("Hello")
        tokens = await model.tokenize("Hello, world!")
        count = await model.count_tokens("Hello, world!")
        length = await model.get_context_length()
        listed = [m.identifier for m in await client.embedding.list_loaded()]
    assert isinstance(one, Sequence) and isinstance(two, Sequence)
    assert len(one) == len(two) == 768 and one == again and one != two
    assert abs(sum(v * v for v in one) - 1) < 1e-3
    assert isinstance(tokens, Sequence) and len(tokens) == count + 2 and length == 2048
    assert listed == ["text-embedding-nomic-embed-text-v1.5"]


async def test_images_go_to_vision_models_only_and_are_recorded(mirrored: Simulator) -> None:
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(mirrored.host_port) as client:
        image = await client.files.prepare_image(PNG, "dot.png")
        text = await client.files._prepare_file(b"plain words", "notes.txt")
        chat = lmstudio.Chat()
        chat.add_user_message("What is this?", images=[image])
        vlm = await client.llm.model("mobilevlm_v2-1.7b")
        seen = await vlm.respond(chat)
        llm = await client.llm.model("llama-3.2-1b-instruct")
        with pytest.raises(lmstudio.LMStudioServerError, match="does not support images"):
            await llm.respond(chat)
    assert image.file_type == "image" and image.size_bytes == len(PNG)
    assert text.file_type == "text/plain" and text.identifier != image.identifier
    assert "image" in seen.content
    ok, refused = mirrored.predictions()
    expected = [{"identifier": image.identifier, "name": "dot.png", "fileType": "image", "sizeBytes": len(PNG)}]
    assert ok["images"] == expected and refused["images"] == expected
    assert refused["status"] == "failed"


async def test_presets_draft_models_and_reasoning_parsing(simulator_factory: Any) -> None:
    sim: Simulator = simulator_factory(models=["main", "draft", ModelSpec("thinker", reasoning=True)])
    async with asyncio.timeout(TIMEOUT), lmstudio.AsyncClient(sim.host_port) as client:
        main = await client.llm.model("main")
        with pytest.raises(lmstudio.LMStudioPresetNotFoundError):
            await main.respond("Hi", preset="No such preset")
        with pytest.raises(lmstudio.LMStudioServerError, match="Draft model"):
            await main.respond("Hi", config={"draftModel": "nope"})
        drafted = await main.respond("Hi [tokens=2]", config={"draftModel": "draft"})
        thinker = await client.llm.model("thinker")
        parsed = await _reasoning_types(thinker, None)
        raw = await _reasoning_types(thinker, {"enabled": False, "startString": "", "endString": ""})
        custom = await _reasoning_types(thinker, {"enabled": True, "startString": "<r>", "endString": "</r>"})
    assert drafted.stats.stop_reason == "eosFound"
    assert parsed[0] == ("<think>", "reasoningStartTag") and ("</think>", "reasoningEndTag") in parsed
    assert {t for _, t in raw} == {"none"} and raw[0][0] == "<think>"  # not parsed: all plain content
    assert custom[0] == ("<r>", "reasoningStartTag") and ("</r>", "reasoningEndTag") in custom
    records = sim.predictions()
    assert records[0]["preset"] == "No such preset" and records[0]["status"] == "failed"
    assert records[2]["draft_model"] == "draft"


async def _reasoning_types(model: Any, parsing: dict[str, Any] | None) -> list[tuple[str, str]]:
    config = {} if parsing is None else {"reasoningParsing": parsing}
    stream = await model.respond_stream("Think [tokens=2]", config=config)
    return [(f.content, f.reasoning_type) async for f in stream]


def test_model_list_file_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "models.json").write_text(
        '{"models": [{"modelKey": "a/b", "type": "embedding", "embeddingLength": 8}]}'
    )
    [spec] = load_model_file(tmp_path / "models.json")
    assert spec == ModelSpec("a/b", type="embedding", embedding_length=8)
    assert load_model_file(SUITE_MODELS)[0].publisher == "hugging-quants"
    (tmp_path / "bad.toml").write_text('[[models]]\nkey = "x"\ncolour = "red"\n')
    with pytest.raises(ValueError, match="unknown model field 'colour'"):
        load_model_file(tmp_path / "bad.toml")
    (tmp_path / "typo.toml").write_text("[[models]]\nkey = 3\n")
    with pytest.raises(ValueError, match="key must be of type str"):
        load_model_file(tmp_path / "typo.toml")
    (tmp_path / "flag.toml").write_text('[[models]]\nkey = "v"\nsize_bytes = true\n')
    with pytest.raises(ValueError, match="size_bytes must be of type int"):
        load_model_file(tmp_path / "flag.toml")


def test_an_idle_instance_with_a_ttl_is_unloaded() -> None:
    now = [1000.0]
    catalogue = Catalogue([ModelSpec("a"), ModelSpec("b", loaded=False)], clock=lambda: now[0])
    catalogue.load("b", ttl_ms=5000)
    now[0] += 4
    catalogue.touch(catalogue.instance("b") or pytest.fail("b is not loaded"))  # use restarts the idle time
    now[0] += 4
    assert [i.identifier for i in catalogue.instances()] == ["a", "b"]
    now[0] += 1.5
    assert [i.identifier for i in catalogue.instances()] == ["a"]  # `a` has no TTL: it stays
