"""`lmstudio-proxy simulate` as a subprocess, and the `--model` option syntax."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from proxy.simulator import ModelSpec

TIMEOUT = 15

SDK_ONE_LINER = (
    "import lmstudio, sys; "
    "client = lmstudio.Client(sys.argv[1]); "
    "result = client.llm.model('tiny').respond('hello [tokens=3]'); "
    "print(result.stats.stop_reason, result.stats.predicted_tokens_count); "
    "client.close()"
)


async def test_simulate_subprocess(free_port: Callable[[], int]) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "simulate", "--port", str(port),
        "--model", "tiny", "--model", "big:downloaded,reasoning", "--tokens-per-second", "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            banner = (await proc.stdout.readline()).decode()
            assert f"http://127.0.0.1:{port}" in banner, banner
            assert re.search(r"tiny.*big \(not loaded\)", banner), banner
            async with httpx.AsyncClient() as http:
                greeting = await http.get(f"http://127.0.0.1:{port}/lmstudio-greeting")
            assert greeting.json() == {"lmstudio": True}
            sdk = await asyncio.create_subprocess_exec(
                sys.executable, "-c", SDK_ONE_LINER, f"127.0.0.1:{port}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await sdk.communicate()
            assert sdk.returncode == 0, err.decode()
            assert out.decode().split() == ["eosFound", "3"]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(TIMEOUT):
            await proc.communicate()
    assert proc.returncode in (0, -signal.SIGINT, 130)


async def test_sigterm_is_a_clean_stop(free_port: Callable[[], int]) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", "simulate", "--port", str(port), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    async with asyncio.timeout(TIMEOUT):
        assert "listening" in (await proc.stdout.readline()).decode()
        proc.send_signal(signal.SIGTERM)
        await proc.communicate()
    assert proc.returncode == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("simulated-llm", ModelSpec("simulated-llm")),
        ("qwen/qwen3-4b:downloaded", ModelSpec("qwen/qwen3-4b", loaded=False)),
        ("r1:reasoning", ModelSpec("r1", reasoning=True)),
        ("r1:downloaded,reasoning", ModelSpec("r1", loaded=False, reasoning=True)),
        ("r1:reasoning, loaded", ModelSpec("r1", reasoning=True)),
    ],
)
def test_model_spec_parse(text: str, expected: ModelSpec) -> None:
    assert ModelSpec.parse(text) == expected


@pytest.mark.parametrize("text", ["m:bogus", ":reasoning", "m:loaded,downloaded"])
def test_model_spec_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        ModelSpec.parse(text)


def test_a_bad_models_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "models.toml"
    bad.write_text('[[models]]\nkey = "x"\nvision = "yes"\n')
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "simulate", "--port", "0", "--models-file", str(bad)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"lmstudio-proxy simulate: {bad}: model 'x': vision must be of type bool"
