"""Relay throughput: concurrent streams direct then through the proxy, with each side's CPU per token.

The direct side's CPU is this process's (`time.process_time()`, every thread): the lmstudio SDK
receiving fragments, the same work the proxy's SDK client does for each token. The proxy's CPU
per token minus that is what the proxy adds of its own (HTTP, SSE, relay, store).

The proxy's streams are read with the minimal HTTP client (`raw_client`), as time to first token
is: httpx spends tens of µs per chunk of its own (73 µs per token at 128 streams, against 19 for
the minimal client, in one measurement), and on two cores that CPU is taken from the simulator
and the proxy, so the ratio measured httpx more than the proxy. Its CPU per token is reported.
"""

from __future__ import annotations

import time
from typing import Any

from proxy.bench.clients import Clients, Side
from proxy.bench.errors import BenchError
from proxy.bench.processes import Child
from proxy.bench.settings import MIN_RELAY_SECONDS
from proxy.bench.stats import per_token_us


async def relay(c: Clients, proxy: Child, count: int, tokens: int) -> dict[str, Any]:
    """`count` concurrent streams, direct then through the proxy, in as many rounds as fill MIN_RELAY_SECONDS.

    A failure of the proxy here is a finding, not the end of the run: it is reported in the row.
    """
    c.say(f"relay: {count} stream(s) x {tokens} tokens, direct then proxy")
    result: dict[str, Any] = {"streams": count, "proxy": None, "ratio": None, "proxy_error": None}
    result["proxy_own_cpu_us_per_token"] = None
    cpu_before = time.process_time()
    result["direct"], rounds = await _side(c, "direct", count, tokens, 0)
    client_cpu = time.process_time() - cpu_before
    result["direct"]["client_cpu_seconds"] = round(client_cpu, 3)
    result["direct"]["client_cpu_us_per_token"] = per_token_us(client_cpu, result["direct"]["tokens"])
    cpu_before, client_before = proxy.cpu_seconds(), time.process_time()
    try:
        result["proxy"], _ = await _side(c, "raw", count, tokens, rounds)
    except BenchError as exc:
        result["proxy_error"] = str(exc)
        await c.wait_proxy_idle()
    else:
        cpu = proxy.cpu_seconds() - cpu_before
        client_cpu = time.process_time() - client_before
        result["proxy"]["client_cpu_seconds"] = round(client_cpu, 3)
        result["proxy"]["client_cpu_us_per_token"] = per_token_us(client_cpu, result["proxy"]["tokens"])
        seconds, relayed = result["proxy"]["seconds"], result["proxy"]["tokens"]
        result["proxy_cpu_seconds"] = round(cpu, 3)
        result["proxy_cpu_us_per_token"] = per_token_us(cpu, relayed)
        result["proxy_cpu_busy"] = round(cpu / seconds, 3)
        result["ratio"] = round(result["proxy"]["tokens_per_second"] / result["direct"]["tokens_per_second"], 3)
        direct_us = result["direct"]["client_cpu_us_per_token"]
        if result["proxy_cpu_us_per_token"] is not None and direct_us is not None:
            result["proxy_own_cpu_us_per_token"] = round(result["proxy_cpu_us_per_token"] - direct_us, 2)
    result["rounds"] = rounds
    await c.clear_records()
    return result


async def _side(c: Clients, side: Side, count: int, tokens: int, rounds: int) -> tuple[dict[str, Any], int]:
    """Batches of `count` streams: `rounds` of them, or (rounds=0) as many as fill MIN_RELAY_SECONDS."""
    received, seconds, done = 0, 0.0, 0
    while done < rounds or (not rounds and seconds < MIN_RELAY_SECONDS):
        started = time.perf_counter()
        samples = await c.batch(side, count, tokens, f"relay{count}.{done}")
        seconds += time.perf_counter() - started
        received += sum(s.tokens for s in samples)
        done += 1
    return {"tokens": received, "seconds": round(seconds, 4), "tokens_per_second": round(received / seconds)}, done
