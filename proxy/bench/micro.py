"""Micro-benchmarks, in this process and without LM Studio: request parsing, SSE framing, import time.

Per-call costs are the median of several timeit repeats (the median shrugs off a repeat that a
busy neighbour interrupted); import time is the best of several fresh interpreters, with the
bare interpreter's start timed the same way and subtracted, since only the rest is ours.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxy.bench.errors import BenchError

# A typical create body: what the Freddy SDKs send for a short conversation.
CREATE_BODY = json.dumps(
    {
        "model": "simulated-llm",
        "inputs": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": "What is the capital of France, and what is it known for?"},
        ],
        "stream": True,
        "temperature": 0.7,
        "metadata": {"source": "bench", "user": "usr_1f2e3d4c"},
    }
).encode()
DELTA_EVENT = {"event": "response.content_delta", "thread_id": "thrd_5f0c2a9e4b1d7c3a8e6f9b20", "delta": "hello"}
REPEATS = 7
REPEAT_SECONDS = 0.05  # each repeat runs about this long: the whole micro run takes seconds
IMPORT_RUNS = 5
IMPORT_STATEMENT = "import proxy.cli"


def per_call(call: Callable[[], object], repeats: int = REPEATS) -> dict[str, Any]:
    """Microseconds per call of `call()`: the median and the best of `repeats` timeit repeats."""
    timer = timeit.Timer(call)
    number, elapsed = 1, 0.0
    while elapsed < REPEAT_SECONDS / 10:  # calibrate: enough calls that the clock's resolution does not matter
        number *= 10
        elapsed = timer.timeit(number)
    number = max(1, round(number * REPEAT_SECONDS / elapsed))
    us = [seconds / number * 1e6 for seconds in timer.repeat(repeats, number)]
    return {"us_per_call": round(statistics.median(us), 3), "best_us": round(min(us), 3), "calls": number,
            "repeats": repeats}  # fmt: skip


def decode_create() -> dict[str, Any]:
    """`proxy.wire.decode_create` on CREATE_BODY: what parsing costs before a request can start."""
    from proxy.errors import ProxyError
    from proxy.wire.decode import decode_create

    try:
        decode_create(CREATE_BODY)  # a body the proxy rejects would time its error path instead
    except ProxyError as exc:
        raise BenchError(f"decode_create rejects the bench's typical body: {exc}") from exc
    return {**per_call(lambda: decode_create(CREATE_BODY)), "body_bytes": len(CREATE_BODY)}


def sse_frame() -> dict[str, Any]:
    """`proxy.sse.frame` on one content delta: paid once per SSE write of every stream."""
    from proxy.sse import frame

    return {**per_call(lambda: frame(DELTA_EVENT)), "frame_bytes": len(frame(DELTA_EVENT))}


def _start_seconds(code: str, env: dict[str, str]) -> float:
    """Wall time of one fresh interpreter running `code`."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise BenchError(f"python -c {code!r} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def import_time(runs: int = IMPORT_RUNS) -> dict[str, Any]:
    """Seconds for `python -c "import proxy.cli"`, the bare interpreter's start, and the difference (best of `runs`,
    the two alternating so that a change in the machine's load hits both)."""
    # -P and PYTHONPATH: the interpreters import this very package, whatever the working directory holds.
    source = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    bare, cli = float("inf"), float("inf")
    for _ in range(runs):
        bare = min(bare, _start_seconds("pass", env))
        cli = min(cli, _start_seconds(IMPORT_STATEMENT, env))
    return {
        "statement": IMPORT_STATEMENT,
        "seconds": round(cli, 4),
        "interpreter_seconds": round(bare, 4),
        "above_interpreter_seconds": round(cli - bare, 4),
        "runs": runs,
    }


def measure() -> dict[str, Any]:
    return {"decode_create": decode_create(), "sse_frame": sse_frame(), "import_cli": import_time()}
