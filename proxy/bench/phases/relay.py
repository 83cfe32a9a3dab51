"""Relay throughput: concurrent streams direct and through the proxy in turn, with each side's CPU per token.

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
from proxy.bench.settings import MIN_RELAY_ROUNDS
from proxy.bench.stats import per_token_us


async def relay(c: Clients, proxy: Child, count: int, tokens: int, seconds: float) -> dict[str, Any]:
    """`count` concurrent streams, a direct batch and a proxy batch in turn, until each side has
    streamed `seconds` over at least MIN_RELAY_ROUNDS batches.

    Alternating, not all direct then all proxy: whatever else slows the machine for a while (the
    machines are shared) then falls on both sides alike, and the ratio moves far less between runs.
    A failure of the proxy here is a finding, not the end of the run: it is reported in the row.
    """
    c.say(f"relay: {count} stream(s) x {tokens} tokens, direct and proxy batches in turn")
    result: dict[str, Any] = {"streams": count, "proxy": None, "ratio": None, "proxy_error": None}
    result["proxy_own_cpu_us_per_token"] = None
    direct, through = _Side(), _Side()
    rounds = 0
    round_ratios: list[float] = []
    while rounds < MIN_RELAY_ROUNDS or min(direct.seconds, through.seconds) < seconds:
        tag = f"relay{count}.{rounds}"
        direct_rate = await direct.batch(c, "direct", count, tokens, tag)
        cpu_before = proxy.cpu_seconds()
        try:
            round_ratios.append(round(await through.batch(c, "raw", count, tokens, tag) / direct_rate, 3))
        except BenchError as exc:
            result["proxy_error"] = str(exc)
            await c.wait_proxy_idle()
            break
        through.server_cpu += proxy.cpu_seconds() - cpu_before
        rounds += 1
    result["direct"] = direct.row()
    if result["proxy_error"] is None:
        result["proxy"] = through.row()
        relayed = through.tokens
        result["proxy_cpu_seconds"] = round(through.server_cpu, 3)
        result["proxy_cpu_us_per_token"] = per_token_us(through.server_cpu, relayed)
        result["proxy_cpu_busy"] = round(through.server_cpu / through.seconds, 3)
        result["ratio"] = round(result["proxy"]["tokens_per_second"] / result["direct"]["tokens_per_second"], 3)
        direct_us = result["direct"]["client_cpu_us_per_token"]
        if result["proxy_cpu_us_per_token"] is not None and direct_us is not None:
            result["proxy_own_cpu_us_per_token"] = round(result["proxy_cpu_us_per_token"] - direct_us, 2)
    result["rounds"] = rounds
    result["round_ratios"] = round_ratios
    await c.clear_records()
    return result


class _Side:
    """One side's sums over its batches: wall time, tokens, this process's CPU (and the proxy's)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.tokens = 0
        self.client_cpu = 0.0
        self.server_cpu = 0.0

    async def batch(self, c: Clients, side: Side, count: int, tokens: int, tag: str) -> float:
        """One batch of `count` streams on this side, added to the sums; its tokens per second."""
        client_before, started = time.process_time(), time.perf_counter()
        samples = await c.batch(side, count, tokens, tag)
        seconds = time.perf_counter() - started
        batch_tokens = sum(s.tokens for s in samples)
        self.seconds += seconds
        self.tokens += batch_tokens
        self.client_cpu += time.process_time() - client_before
        return batch_tokens / seconds

    def row(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "seconds": round(self.seconds, 4),
            "tokens_per_second": round(self.tokens / self.seconds),
            "client_cpu_seconds": round(self.client_cpu, 3),
            "client_cpu_us_per_token": per_token_us(self.client_cpu, self.tokens),
        }
