"""The JavaScript SDK (@lmstudio/sdk) runs seed 000's two cancel snippets against the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from proxy.simulator import Simulator

JS_TESTS = Path(__file__).parent / "js"
# Where `node_modules` lives: CI npm-installs tests/js/package.json into a throwaway folder.
JS_DIR = Path(os.environ.get("LMSTUDIO_PROXY_JS_DIR") or JS_TESTS)
NODE = shutil.which("node")
TIMEOUT = 30

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (JS_DIR / "node_modules" / "@lmstudio" / "sdk").is_dir(),
        reason=(
            f"@lmstudio/sdk is not installed in {JS_DIR}/node_modules; run: "
            'D=$(mktemp -d) && cp tests/js/package.json "$D" && npm install --prefix "$D" --no-audit --no-fund'
            ' && export LMSTUDIO_PROXY_JS_DIR="$D"'
        ),
    ),
]


async def test_js_sdk_cancel_snippets(simulator: Simulator) -> None:
    simulator.set_settings(tokens_per_second=50)
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE, str(JS_TESTS / "cancel.mjs"), str(simulator.port), "simulated-llm",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LMSTUDIO_PROXY_JS_DIR": str(JS_DIR)},
    )  # fmt: skip
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, (out.decode(), err.decode())
    assert "communication warning" not in err.decode().lower(), err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    assert [(r["snippet"], r["stopReason"]) for r in lines] == [("cancel", "userStopped"), ("abort", "userStopped")]
    records = simulator.predictions()
    assert [r["status"] for r in records] == ["cancelled", "cancelled"]
    assert [r["tokens_after_cancel"] for r in records] == [0, 0]
    assert records[0]["tokens_generated"] > 0  # the timer cancel lands mid-stream
    assert records[0]["config"]["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 50}


def _run_sdk_script(package: str, simulator: Simulator) -> list[dict[str, object]]:
    assert NODE is not None
    completed = subprocess.run(
        [NODE, str(JS_TESTS / "sdk.mjs"), package, str(simulator.port)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        env={**os.environ, "LMSTUDIO_PROXY_JS_DIR": str(JS_DIR)},
        check=False,
    )
    assert completed.returncode == 0, (completed.stdout, completed.stderr)
    # Any packet the SDK's schemas reject shows up as a communication warning (2.0.0 is strict).
    assert "communication warning" not in completed.stderr.lower(), completed.stderr
    return [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]


# 2.0.0 is installed under an npm alias beside 1.5.0 (see tests/js/package.json).
@pytest.mark.parametrize("package", ["@lmstudio/sdk", "lmstudio-sdk-2"])
def test_js_sdk_drives_the_simulator(package: str, simulator_factory: Callable[..., Simulator]) -> None:
    if not (JS_DIR / "node_modules" / package).is_dir():
        pytest.skip(f"{package} is not installed in {JS_DIR}")
    simulator = simulator_factory(
        models=["sim-tools:tools", "sim-eyes:vision", "sim-large:downloaded"], tokens_per_second=200
    )
    steps = {s["step"]: s for s in _run_sdk_script(package, simulator)}
    assert steps["respond"]["identifier"] == "sim-tools" and steps["respond"]["stopReason"] == "eosFound"
    assert steps["cancel"]["stopReason"] == "userStopped"
    assert steps["abort"]["stopReason"] == "userStopped"
    assert steps["act"]["rounds"] == 2 and steps["act"]["calls"] == [[123, 3210]]
    assert "3333" in str(steps["act"]["last"])
    assert steps["structured"]["parsed"] == {"city": "Name", "population": 3000000}
    assert steps["image"]["type"] == "image" and "image" in str(steps["image"]["content"])
    assert "does not support images" in str(steps["image"]["refused"])
    assert steps["listLoaded"]["identifiers"] == ["sim-tools", "sim-eyes"]
    assert steps["load"]["identifier"] == "js-large"
    assert steps["load"]["progress"] == [pytest.approx(i / 10) for i in range(1, 11)]
    records = simulator.predictions()
    assert [r["tool_calls"] for r in records if r["tool_calls"]] == [
        [
            {
                "type": "function",
                "name": "add",
                "id": records[3]["tool_calls"][0]["id"],
                "arguments": {"a": 123, "b": 3210},
            }
        ]
    ]
    assert records[5]["structured"]["type"] == "json"
    image = {"identifier": steps["image"]["identifier"], "name": "dot.png", "fileType": "image", "sizeBytes": 12}
    assert [r["images"] for r in records[6:]] == [[image], [image]]
    assert [r["status"] for r in records[6:]] == ["completed", "failed"]
