"""Saturation: cancels while many streams run at a real model's pace and the proxy is busy with all of them.

Every stream runs at SATURATION_TOKENS_PER_SECOND (256 x 40 tokens/s is about what the proxy relays at
full speed on two cores). Once every stream has its first deltas, a quarter of them are cancelled,
one every SATURATION_CANCEL_SPACING seconds, each cancel its own request (users do not wait for each
other); the rest keep streaming until the last cancel is answered, then disconnect. For each
cancelled stream: how long the cancel took to be answered and to reach LM Studio, and whether the
store holds what the cancel's body promised (quick_edit: the thread is gone; keep_partial: the user
message and exactly the text the client saw, marked cancelled).

The cancels are sent from worker threads with blocking `http.client` connections, not from this
event loop: reading 256 streams saturates this loop too, and its lag would be counted as the
proxy's (a thread waiting on its socket gets the GIL back within the 5 ms switch interval).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from proxy.bench.clients import Clients
from proxy.bench.errors import BenchError
from proxy.bench.settings import (
    API_KEY,
    DELTAS_BEFORE_STOP,
    LONG_TOKENS,
    SATURATION_CANCEL_SPACING,
    SATURATION_TOKENS_PER_SECOND,
    STEP_TIMEOUT,
)
from proxy.bench.stats import ms_summary
from proxy.bench.streams import Sample, owned_tasks, store_mismatch, until


@dataclass
class _Cancel:
    """One cancel as its client saw it."""

    index: int
    wall: float = 0.0  # time.time() when it was sent (to meet the simulator's timestamps)
    answered: float = 0.0  # seconds until the cancel request was answered
    body: dict[str, Any] = field(default_factory=dict)


async def saturation(c: Clients, proxy_url: str, count: int) -> dict[str, Any]:
    """`count` streams at SATURATION_TOKENS_PER_SECOND each, a quarter of them cancelled."""
    cancels = [_Cancel(i) for i in range(0, count, 4)]
    c.say(f"saturation: {count} streams at {SATURATION_TOKENS_PER_SECOND:g} tokens/s, {len(cancels)} cancels")
    await c.wait_proxy_idle()
    await c.clear_records()
    await c.sim_settings(SATURATION_TOKENS_PER_SECOND)
    try:
        samples = [Sample(text=[]) for _ in range(count)]
        changed, release = asyncio.Event(), asyncio.Event()
        async with owned_tasks() as tasks:
            for i, sample in enumerate(samples):
                prompt = c.prompt(f"saturation {i} end", LONG_TOKENS)
                tasks.append(asyncio.create_task(c.proxy(prompt, None, sample, changed, lambda _: release.is_set())))
            await until(lambda: all(s.deltas >= DELTAS_BEFORE_STOP for s in samples), changed, tasks, "deltas on all")
            started = time.perf_counter()
            loop = asyncio.get_running_loop()
            host, _, port = proxy_url.removeprefix("http://").partition(":")
            with ThreadPoolExecutor(max_workers=min(len(cancels), 32), thread_name_prefix="bench-cancel") as pool:
                senders = []
                for n, one in enumerate(cancels):
                    # Paced, not synchronised: a cancel goes out every SATURATION_CANCEL_SPACING seconds.
                    await asyncio.sleep(max(0.0, started + n * SATURATION_CANCEL_SPACING - time.perf_counter()))
                    thread_id = samples[one.index].thread_id
                    senders.append(loop.run_in_executor(pool, _send_cancel, host, int(port), thread_id, one))
                async with asyncio.timeout(STEP_TIMEOUT):
                    await asyncio.gather(*senders)
                    await asyncio.gather(*(tasks[one.index] for one in cancels))
            release.set()
            async with asyncio.timeout(STEP_TIMEOUT):
                await asyncio.gather(*tasks)
    finally:
        await c.sim_settings(0.0)
    await c.wait_proxy_idle()
    to_lmstudio = await _to_lmstudio(c, cancels) if c.sim is not None else None
    mismatches = [
        m for one in cancels if (m := await store_mismatch(c.http, f"stream {one.index}", one.body, samples[one.index]))
    ]
    await c.clear_records()
    return {
        "streams": count,
        "tokens_per_second": SATURATION_TOKENS_PER_SECOND,
        "cancels": len(cancels),
        "answered": ms_summary([one.answered for one in cancels]),
        "to_lmstudio": None if to_lmstudio is None else ms_summary(to_lmstudio),
        "store_matches": len(cancels) - len(mismatches),
        "mismatches": mismatches[:5],
    }


def _send_cancel(host: str, port: int, thread_id: str, one: _Cancel) -> None:
    """In a worker thread: one cancel on its own connection, timed there."""
    connection = http.client.HTTPConnection(host, port, timeout=STEP_TIMEOUT)
    try:
        connection.connect()  # before the clock starts: a browser's connection is open already
        one.wall, sent = time.time(), time.perf_counter()
        connection.request("POST", f"/v1/model/response/{thread_id}/cancel", headers={"X-API-Key": API_KEY})
        response = connection.getresponse()
        text = response.read()
        one.answered = time.perf_counter() - sent
    finally:
        connection.close()
    if response.status != 200:
        raise BenchError(f"a cancel under saturation answered {response.status}: {text[:300]!r}")
    one.body = json.loads(text)


async def _to_lmstudio(c: Clients, cancels: list[_Cancel]) -> list[float]:
    """Seconds from each cancel's sending until the simulator got LM Studio's `cancel`."""
    assert c.sim is not None
    response = await c.sim.get("/simulator/predictions")
    response.raise_for_status()
    received: dict[str, float] = {}
    for record in response.json():
        for message in record["history"]:
            if f"bench {c.run_id} saturation " in message["text"] and record["cancel_received_at"] is not None:
                received[message["text"]] = record["cancel_received_at"]
    out = []
    for one in cancels:
        at = received.get(c.prompt(f"saturation {one.index} end", LONG_TOKENS))
        if at is None:
            raise BenchError(f"the simulator got no cancel for saturation stream {one.index}")
        out.append(at - one.wall)
    return out
