"""Cross-replica cancel: a stream on replica A cancelled through replica B, against the same cancel sent to A.

Cancel to B: B records the stop request and the cancel's decision in the database (a row change),
NOTIFY wakes A, A stops LM Studio's prediction and commits the stream's end, and B answers once it is
committed. Cancel to A: A does it all itself. Samples alternate between the two (B first, then A
first), so a change in the machine's load hits both. The cancel goes out with the minimal HTTP client,
on a connection opened beforehand; the times are from sending it until LM Studio got the cancel (the
simulator's `cancel_received_at`) and until it was answered. After each, the store (read through the replica
that did not take the cancel) must hold what the cancel's body said.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from proxy.bench.clients import Clients
from proxy.bench.errors import BenchError
from proxy.bench.raw_client import RawClient
from proxy.bench.settings import API_KEY, DELTAS_BEFORE_STOP, LONG_TOKENS, STEP_TIMEOUT
from proxy.bench.stats import ms_summary
from proxy.bench.streams import Sample, owned_tasks, store_mismatch, until

ROUTES = ("cross", "same")  # cancel sent to B (the other replica), to A (the stream's)


async def cross_replica_cancel(c: Clients, url_a: str, url_b: str, repeat: int) -> dict[str, Any]:
    """`repeat` cancels each way; a BenchError is a finding, reported with the samples so far."""
    c.say(f"cross-replica cancel: {repeat} samples each way (stream on A, cancel to B or to A)")
    raw = {"cross": RawClient(url_b), "same": RawClient(url_a)}
    times: dict[str, list[tuple[float, float]]] = {route: [] for route in ROUTES}
    mismatches: list[str] = []
    modes: dict[str, int] = {}
    error = None
    async with httpx.AsyncClient(base_url=url_b, headers={"X-API-Key": API_KEY}, timeout=STEP_TIMEOUT) as http_b:
        try:
            for i in range(repeat):
                for route in ROUTES[:: 1 if i % 2 == 0 else -1]:
                    via = http_b if route == "same" else c.http  # the store is read through the other replica
                    to_lmstudio, answered, mode, mismatch = await _one(c, raw[route], via, route, i)
                    times[route].append((to_lmstudio, answered))
                    modes[mode] = modes.get(mode, 0) + 1
                    if mismatch:
                        mismatches.append(mismatch)
        except BenchError as exc:
            done = sum(len(t) for t in times.values())
            error = f"after {done} samples: {exc}"
        finally:
            for client in raw.values():
                await client.aclose()
    out: dict[str, Any] = {"samples": repeat, "error": error}
    for route in ROUTES:
        out[route] = {
            "to_lmstudio": ms_summary([t[0] for t in times[route]]) if c.sim is not None else None,
            "answered": ms_summary([t[1] for t in times[route]]),
        }
    cancels = sum(len(t) for t in times.values())
    out.update(cancels=cancels, modes=modes, store_matches=cancels - len(mismatches), mismatches=mismatches[:5])
    return out


async def _one(c: Clients, raw: RawClient, via: httpx.AsyncClient, route: str, i: int) -> tuple[float, float, str, str]:
    """One stream on A cancelled through `raw`: seconds to LM Studio (NaN without the simulator) and
    to the answer, the cancel's mode, and what the store holds against its body ("" when they match)."""
    marker = f"bench {c.run_id} replica-cancel {route} {i}"
    sample, changed = Sample(text=[]), asyncio.Event()
    await raw.get("/health")  # the connection is open before the clock starts, as a browser's is
    async with owned_tasks() as tasks:
        tasks.append(asyncio.create_task(c.proxy(f"{marker} [tokens={LONG_TOKENS}]", None, sample, changed)))
        await until(lambda: sample.deltas >= DELTAS_BEFORE_STOP, changed, tasks, "the first deltas")
        wall, sent = time.time(), time.perf_counter()
        status, body = await raw.request("POST", f"/v1/model/response/{sample.thread_id}/cancel")
        answered = time.perf_counter() - sent
        if status != 200:
            raise BenchError(f"a {route}-replica cancel answered {status}: {body[:300]!r}")
        async with asyncio.timeout(STEP_TIMEOUT):
            await tasks[0]
    to_lmstudio = float("nan")
    if c.sim is not None:
        record = await c.record(marker, lambda r: r["cancel_received_at"] is not None)
        to_lmstudio = record["cancel_received_at"] - wall
        await c.clear_records()
    answer = json.loads(body)
    mismatch = await store_mismatch(via, f"cancel {route} {i}", answer, sample)
    return to_lmstudio, answered, str(answer.get("cancel_mode")), mismatch
