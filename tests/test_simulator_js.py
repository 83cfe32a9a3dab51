"""The JavaScript SDK (@lmstudio/sdk) runs seed 000's two cancel snippets against the simulator."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
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
