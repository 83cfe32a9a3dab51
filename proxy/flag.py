"""`Flag`: `asyncio.Event`'s set/clear/wait for the per-stream signals, in a tenth of its memory.

Every `asyncio.Event` allocates a waiter deque up front (760 bytes on CPython 3.11); an active
stream has five such signals, most never waited on, or by one task. A `Flag` keeps a list only
while someone waits: about 4 KB less per active stream (issue 18's budget is 50 KB).
"""

from __future__ import annotations

import asyncio


class Flag:
    """Set once something happened; `wait()` returns at once when set, else when `set()` is called.

    Like `asyncio.Event`: a waiter woken by `set()` returns even if `clear()` follows before it runs.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:  # cancelled before set()
                self._waiters.remove(waiter)
