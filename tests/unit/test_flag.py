"""`Flag`, the per-stream signal: `asyncio.Event`'s behaviour, without its up-front waiter deque."""

from __future__ import annotations

import asyncio
import tracemalloc

from proxy.flag import Flag


async def test_wait_returns_at_once_when_set_and_after_set_otherwise() -> None:
    flag = Flag()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters) and not flag.is_set()
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert flag.is_set()
    await asyncio.wait_for(flag.wait(), 1)  # already set: no waiting


async def test_a_waiter_woken_by_set_returns_even_if_clear_follows() -> None:
    flag = Flag()
    waiter = asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    flag.set()
    flag.clear()
    await asyncio.wait_for(waiter, 1)
    assert not flag.is_set()
    late = asyncio.ensure_future(flag.wait())  # cleared: a new wait waits again
    await asyncio.sleep(0)
    assert not late.done()
    late.cancel()


async def test_a_cancelled_waiter_leaves_nothing_behind_and_set_still_wakes_the_others() -> None:
    flag = Flag()
    gone, stays = asyncio.ensure_future(flag.wait()), asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert flag._waiters is not None and len(flag._waiters) == 1
    flag.set()
    await asyncio.wait_for(stays, 1)
    assert gone.cancelled() and flag._waiters is None


def test_a_flag_costs_a_fraction_of_an_event() -> None:
    def bytes_per(make: type) -> float:
        tracemalloc.start()
        try:
            before = tracemalloc.take_snapshot()
            kept = [make() for _ in range(500)]
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert len(kept) == 500
        return sum(s.size_diff for s in after.compare_to(before, "filename")) / 500

    assert bytes_per(Flag) * 5 < bytes_per(asyncio.Event)
