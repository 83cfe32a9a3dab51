"""Warm-up: predictions and concurrent streams each way, not counted (first-use costs stay out of the figures)."""

from __future__ import annotations

from proxy.bench.clients import Clients
from proxy.bench.settings import TTFT_TOKENS, WARMUP


def warm_streams(streams: tuple[int, ...]) -> int:
    return min(8, max(streams))


def describe(streams: tuple[int, ...]) -> str:
    """The warm-up in words, for the report."""
    return (
        f"{WARMUP} direct and {WARMUP} proxy predictions, then {warm_streams(streams)} "
        "concurrent streams of each, not counted"
    )


async def warm_up(c: Clients, streams: tuple[int, ...], tokens: int) -> None:
    c.say("warming up")
    for i in range(WARMUP):
        await c.direct(f"bench warm {i} [tokens={TTFT_TOKENS}]", TTFT_TOKENS)
        await c.proxy(f"bench warm {i} [tokens={TTFT_TOKENS}]", TTFT_TOKENS)
    await c.batch("direct", warm_streams(streams), min(tokens, 200), "warm")
    await c.batch("proxy", warm_streams(streams), min(tokens, 200), "warm")
    await c.clear_records()
