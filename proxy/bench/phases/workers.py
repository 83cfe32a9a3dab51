"""Relay with N workers against one process: the same batches through `serve --workers N` and through `serve`.

Both servers share the PostgreSQL database and the simulator at full speed. For each stream count,
batches alternate between the two (one process first, then the workers first) until each side has
streamed WORKERS_RELAY_SECONDS; both run the same number of batches. Streams are read with the minimal
HTTP client, each on its own connection (the kernel hands a new connection to whichever worker
accepts it first), and count the `response.completed` event's output tokens.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from proxy.bench.clients import Clients
from proxy.bench.errors import BenchError
from proxy.bench.raw_client import RawClient
from proxy.bench.settings import PHASE_TIMEOUT, WORKERS_RELAY_SECONDS

SIDES = ("one", "workers")


async def workers_relay(
    c: Clients, url_one: str, url_workers: str, workers: int, counts: tuple[int, ...], tokens: int
) -> dict[str, Any]:
    """One row per stream count: tokens/s through one process and through N workers, and their ratio."""
    rows = []
    for count in counts:
        c.say(f"relay with {workers} workers against one process: {count} stream(s) x {tokens} tokens")
        rows.append(await _row(c, {"one": url_one, "workers": url_workers}, count, tokens))
    return {"workers": workers, "tokens_per_stream": tokens, "rows": rows}


async def _row(c: Clients, urls: dict[str, str], count: int, tokens: int) -> dict[str, Any]:
    """A failure here is a finding, not the end of the run: it is reported in the row."""
    received = dict.fromkeys(SIDES, 0)
    seconds = dict.fromkeys(SIDES, 0.0)
    rounds = 0
    row: dict[str, Any] = {"streams": count, "one": None, "workers": None, "ratio": None, "error": None}
    try:
        while min(seconds.values()) < WORKERS_RELAY_SECONDS:
            for side in SIDES[:: 1 if rounds % 2 == 0 else -1]:
                started = time.perf_counter()
                received[side] += await _batch(c, urls[side], count, tokens, f"workers{count}.{side}.{rounds}")
                seconds[side] += time.perf_counter() - started
            rounds += 1
    except (BenchError, OSError) as exc:
        row["error"] = f"after {rounds} round(s): {type(exc).__name__}: {exc}"
        return row
    finally:
        await c.clear_records()
    for side in SIDES:
        row[side] = {
            "tokens": received[side],
            "seconds": round(seconds[side], 4),
            "tokens_per_second": round(received[side] / seconds[side]),
        }
    row["ratio"] = round(row["workers"]["tokens_per_second"] / row["one"]["tokens_per_second"], 3)
    row["rounds"] = rounds
    return row


async def _batch(c: Clients, url: str, count: int, tokens: int, tag: str) -> int:
    """`count` concurrent streams of `tokens` tokens, each on a new connection: the tokens received."""
    clients = [RawClient(url) for _ in range(count)]
    tasks: list[asyncio.Task[int]] = []
    try:
        for i, client in enumerate(clients):
            body = {"inputs": [{"role": "user", "content": c.prompt(f"{tag} {i}", tokens)}], "stream": True,
                    "model": c.model_key, "max_tokens": tokens}  # fmt: skip
            tasks.append(asyncio.create_task(client.stream(body)))
        async with asyncio.timeout(PHASE_TIMEOUT):
            return sum(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.aclose()
