"""Stops: how fast a cancel request, or a client closing its stream, reaches LM Studio."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from proxy.bench.clients import Clients
from proxy.bench.errors import BenchError
from proxy.bench.raw_client import RawClient
from proxy.bench.settings import DELTAS_BEFORE_STOP, DISCONNECT_SETTLE, LONG_TOKENS, STEP_TIMEOUT
from proxy.bench.stats import ms_summary
from proxy.bench.streams import Sample, owned_tasks, until

T = TypeVar("T")


async def cancel(c: Clients, proxy_url: str, repeat: int) -> dict[str, Any]:
    """The cancel goes out with the minimal HTTP client: httpx's own cost per request would hide the proxy's."""
    c.say(f"cancel: {repeat} samples")
    client = RawClient(proxy_url)
    try:
        samples, error = await _collect(repeat, lambda i: _cancel_one(c, client, i))
    finally:
        await client.aclose()
    return {
        "to_lmstudio": ms_summary([s[0] for s in samples]) if c.sim is not None else None,
        "answered": ms_summary([s[1] for s in samples]),
        "cancelled_event": ms_summary([s[2] for s in samples]),
        "error": error,
    }


async def disconnect(c: Clients, proxy_url: str, repeat: int) -> dict[str, Any]:
    """Needs the simulator: only its records say when LM Studio got the cancel."""
    c.say(f"disconnect: {repeat} samples")
    to_lmstudio, error = await _collect(repeat, lambda i: _disconnect_one(c, proxy_url, i))
    return {"to_lmstudio": ms_summary(to_lmstudio), "error": error}


async def _collect(repeat: int, one: Callable[[int], Awaitable[T]]) -> tuple[list[T], str | None]:
    """`repeat` samples of `one(i)`; a BenchError is a finding, reported with the samples so far."""
    samples: list[T] = []
    try:
        for i in range(repeat):
            samples.append(await one(i))
    except BenchError as exc:
        return samples, f"after {len(samples)} samples: {exc}"
    return samples, None


async def _cancel_one(c: Clients, client: RawClient, i: int) -> tuple[float, float, float]:
    """Cancel a long stream after its first deltas: seconds until LM Studio got the cancel (NaN
    without the simulator), until the cancel was answered, until `response.cancelled` arrived."""
    marker = f"bench {c.run_id} cancel {i}"
    sample, changed = Sample(), asyncio.Event()
    async with owned_tasks() as tasks:
        tasks.append(asyncio.create_task(c.proxy(f"{marker} [tokens={LONG_TOKENS}]", None, sample, changed)))
        await until(lambda: sample.deltas >= DELTAS_BEFORE_STOP, changed, tasks, "the first deltas")
        wall, sent = time.time(), time.perf_counter()
        status, body = await client.request("POST", f"/v1/model/response/{sample.thread_id}/cancel")
        answered = time.perf_counter() - sent
        if status != 200:
            raise BenchError(f"cancel answered {status}: {body[:300]!r}")
        async with asyncio.timeout(STEP_TIMEOUT):
            await tasks[0]
    if sample.terminal != "response.cancelled":
        raise BenchError(f"a cancelled stream ended with {sample.terminal or 'no terminal event'}")
    to_lmstudio = math.nan
    if c.sim is not None:
        record = await c.record(marker, lambda r: r["cancel_received_at"] is not None)
        to_lmstudio = record["cancel_received_at"] - wall
        await c.clear_records()
    return to_lmstudio, answered, sample.terminal_at - sent


async def _disconnect_one(c: Clients, proxy_url: str, i: int) -> float:
    """Close a long stream after its first deltas: seconds until LM Studio got the cancel.

    The minimal client closes the connection (httpx's own closing would be part of the figure),
    and the simulator's record is asked for only after DISCONNECT_SETTLE: asked at once, the
    bench's own requests took the CPU the proxy needed to pass the cancel on (p90 3.4-4.2 ms
    against 2.8-3.3 ms, interleaved samples).
    """
    marker = f"bench {c.run_id} disconnect {i}"
    body = {"inputs": [{"role": "user", "content": f"{marker} [tokens={LONG_TOKENS}]"}], "stream": True,
            "model": c.model_key}  # fmt: skip
    closed = await RawClient(proxy_url).disconnect_after(body, DELTAS_BEFORE_STOP)
    await asyncio.sleep(DISCONNECT_SETTLE)  # the cancel is due within milliseconds; its time is the simulator's
    record = await c.record(marker, lambda r: r["status"] != "running")
    if record["cancel_received_at"] is None:
        raise BenchError(f"the simulator got no cancel after a disconnect: {record['status']}")
    await c.clear_records()
    return float(record["cancel_received_at"] - closed)
