"""Time to first token: direct, through the proxy with httpx and with the minimal client, and through
the bare relay (`proxy.bench.bare`) with the minimal client, interleaved."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.bench.clients import Clients
from proxy.bench.processes import Child
from proxy.bench.raw_client import RawClient
from proxy.bench.settings import BARE_WARMUP, STATIC_PATH, TTFT_TOKENS
from proxy.bench.stats import balanced_orders, ms_summary


async def ttft(
    c: Clients, proxy: Child, proxy_url: str, floor_url: str, bare: Child, bare_url: str, repeat: int
) -> dict[str, Any]:
    c.say(f"time to first token: {repeat} samples each way")
    direct: list[float] = []
    httpx_ttft: list[float] = []
    raw: list[float] = []
    bare_ttft: list[float] = []  # the bare relay's, with the minimal client
    direct_cpu = 0.0  # this process's CPU during the direct samples: the SDK client's
    own: list[float] = []  # the proxy's X-Proxy-Overhead-Ms of each minimal-client request
    prompt = f"Say hello. [tokens={TTFT_TOKENS}]"
    body = {"inputs": [{"role": "user", "content": prompt}], "stream": True, "model": c.model_key,
            "max_tokens": TTFT_TOKENS}  # fmt: skip
    client = RawClient(proxy_url)
    bare_client = RawClient(bare_url)

    async def direct_side() -> None:
        nonlocal direct_cpu
        cpu = time.process_time()
        direct.append((await c.direct(prompt, TTFT_TOKENS)).ttft)
        direct_cpu += time.process_time() - cpu

    async def httpx_side() -> None:
        httpx_ttft.append((await c.proxy(prompt, TTFT_TOKENS)).ttft)

    async def raw_side() -> None:
        first = await client.ttft(body)
        raw.append(first.seconds)
        assert first.proxy_own_seconds is not None  # (the proxy's answer must carry it: checked by ttft)
        own.append(first.proxy_own_seconds)

    async def bare_side() -> None:
        bare_ttft.append((await bare_client.ttft(body, own_header=False)).seconds)

    # What httpx costs by itself: the same small GET with each client (no LM Studio involved).
    httpx_get: list[float] = []
    raw_get: list[float] = []

    async def httpx_get_side() -> None:
        started = time.perf_counter()
        (await c.http.get(STATIC_PATH)).raise_for_status()
        httpx_get.append(time.perf_counter() - started)

    async def raw_get_side() -> None:
        raw_get.append(await client.get(STATIC_PATH))

    sides: list[Callable[[], Awaitable[None]]] = [direct_side, httpx_side, raw_side, bare_side]
    try:
        for _ in range(BARE_WARMUP):  # its model handle and connection (the others are warm by now)
            await bare_client.ttft(body, own_header=False)
        cpu = proxy.run_seconds(), bare.run_seconds()
        orders = balanced_orders(len(sides))  # each side follows each other one equally often
        for i in range(repeat):
            for index in orders[i % len(orders)]:
                await sides[index]()
        proxy_cpu, bare_cpu = proxy.run_seconds() - cpu[0], bare.run_seconds() - cpu[1]
        for i in range(repeat):
            for side in (httpx_get_side, raw_get_side)[:: 1 if i % 2 else -1]:
                await side()
    finally:
        await client.aclose()
        await bare_client.aclose()
    await c.clear_records()
    d, p, r, b = ms_summary(direct), ms_summary(httpx_ttft), ms_summary(raw), ms_summary(bare_ttft)
    floor = await _floor(floor_url, float(d["p50_ms"]) / 1000, repeat)
    overhead = {k: round(float(p[k]) - float(d[k]), 3) for k in ("p50_ms", "p99_ms")}
    raw_overhead = {k: round(float(r[k]) - float(d[k]), 3) for k in ("p50_ms", "p99_ms")}
    bare_overhead = {k: round(float(b[k]) - float(d[k]), 3) for k in ("p50_ms", "p99_ms")}
    return {
        "direct": d,
        "proxy": p,
        "overhead": overhead,
        "proxy_raw_client": r,
        "overhead_raw_client": raw_overhead,
        # What the proxy itself counts: its time before LM Studio was asked, and from LM Studio's
        # first fragment to the response's headers (the kernel's and uvicorn's parts are not in it).
        "proxy_own": ms_summary(own),
        "static_get": {"path": STATIC_PATH, "httpx": ms_summary(httpx_get), "raw_client": ms_summary(raw_get)},
        "floor": floor,
        # What is left of the overhead once the floor's two hops are taken off: the proxy's work.
        "overhead_above_floor": {k: round(raw_overhead[k] - float(floor[k]), 3) for k in ("p50_ms", "p99_ms")},
        # The same server and SDK doing nothing else: what any proxy made of them adds here, and
        # what is left of the overhead above it (the proxy's own work, and its coalesced writes).
        "bare_relay": b,
        "overhead_bare_relay": bare_overhead,
        "overhead_above_bare_relay": {k: round(raw_overhead[k] - bare_overhead[k], 3) for k in ("p50_ms", "p99_ms")},
        # CPU per request of these short streams: the proxy served two a round (httpx's and the
        # minimal client's), the bare relay one, the direct SDK client one (this process meanwhile).
        "cpu_ms_per_request": {
            "proxy": round(proxy_cpu / (2 * repeat) * 1000, 3),
            "bare_relay": round(bare_cpu / repeat * 1000, 3),
            "direct_client": round(direct_cpu / repeat * 1000, 3),
        },
    }


async def _floor(url: str, idle: float, repeat: int) -> dict[str, Any]:
    """A request to the do-nothing server (`proxy.bench.floor`) after `idle` seconds of waiting, as
    a TTFT sample waits for LM Studio: the two hops a proxy adds, at this machine's wake-up cost."""
    client = RawClient(url)
    samples: list[float] = []
    try:
        await client.get("/")  # the connection is open before the first sample
        for _ in range(repeat):
            await asyncio.sleep(idle)
            samples.append(await client.get("/"))
    finally:
        await client.aclose()
    return {"idle_ms": round(idle * 1000, 3), **ms_summary(samples)}
