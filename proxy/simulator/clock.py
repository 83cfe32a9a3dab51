"""Cancellable pauses: wait for a duration unless an event fires first."""

from __future__ import annotations

import asyncio


async def pause(seconds: float, stop: asyncio.Event | None = None) -> bool:
    """Wait `seconds` (0 still yields to the loop); return True if `stop` was set by the end."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    if stop.is_set():
        return True
    if seconds <= 0:
        await asyncio.sleep(0)
        return stop.is_set()
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return stop.is_set()
    return True
