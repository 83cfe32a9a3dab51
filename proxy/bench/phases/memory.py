"""Memory: the proxy's RSS idle, then with many streams open mid-generation."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.bench.clients import Clients
from proxy.bench.processes import Child
from proxy.bench.settings import DELTAS_BEFORE_STOP, LONG_TOKENS, MEMORY_TOKENS_PER_SECOND, STEP_TIMEOUT
from proxy.bench.streams import Sample, owned_tasks, until


async def memory(c: Clients, proxy: Child, count: int) -> dict[str, Any]:
    """RSS idle, then with `count` streams open mid-generation (the simulator slowed to a human pace)."""
    c.say(f"memory: {count} open streams")
    await c.wait_proxy_idle()
    idle = proxy.rss_bytes()
    await c.sim_settings(MEMORY_TOKENS_PER_SECOND)
    try:
        changed, release = asyncio.Event(), asyncio.Event()
        samples = [Sample() for _ in range(count)]
        async with owned_tasks() as tasks:
            for i, sample in enumerate(samples):
                prompt = c.prompt(f"memory {i}", LONG_TOKENS)
                tasks.append(asyncio.create_task(c.proxy(prompt, None, sample, changed, lambda _: release.is_set())))
            await until(lambda: all(s.deltas >= DELTAS_BEFORE_STOP for s in samples), changed, tasks, "deltas on all")
            active = proxy.rss_bytes()
            release.set()
            async with asyncio.timeout(STEP_TIMEOUT):
                await asyncio.gather(*tasks)
    finally:
        await c.sim_settings(0.0)
    await c.wait_proxy_idle()
    await c.clear_records()
    return {"idle_bytes": idle, "active_bytes": active, "streams": count}
