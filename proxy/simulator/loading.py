"""Model loading: the `getOrLoad` and `loadModel` channels and the JIT load a prediction triggers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.simulator import protocol
from proxy.simulator.channel import Channel, Connection
from proxy.simulator.clock import pause
from proxy.simulator.state import SimState

LOAD_STEPS = 10

ProgressCallback = Callable[[float], Awaitable[None]]


async def load_model(
    state: SimState, key: str, stop: asyncio.Event, on_progress: ProgressCallback | None = None
) -> bool:
    """Load `key` over `load_seconds`; return False if `stop` fired first (it stays unloaded)."""
    step = state.settings_for(key).load_seconds / LOAD_STEPS
    for i in range(1, LOAD_STEPS + 1):
        if await pause(step, stop):
            return False
        if on_progress is not None:
            await on_progress(i / LOAD_STEPS)
    with state.changing():
        state.catalogue.mark_loaded(key)
    return True


class LoadChannel(Channel):
    """`getOrLoad` (and `loadModel`): alreadyLoaded, or startLoading → loadProgress… → loadSuccess."""

    def __init__(self, conn: Connection, channel_id: int, state: SimState, params: Any, *, always_load: bool) -> None:
        super().__init__(conn, channel_id, state)
        params = params if isinstance(params, dict) else {}
        query = params.get("modelKey") if always_load else params.get("identifier")
        self._query = query if isinstance(query, str) else ""
        self._always_load = always_load
        self._cancel = asyncio.Event()

    def receive(self, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "cancel":
            self._cancel.set()

    async def run(self) -> None:
        catalogue = self.state.catalogue
        spec = catalogue.resolve(self._query)
        if spec is None:
            loaded = [info["identifier"] for info in catalogue.loaded_infos()]
            await self.fail(protocol.model_not_found(self._query, loaded))
            return
        if catalogue.is_loaded(spec.key) and not self._always_load:
            await self.send({"type": "alreadyLoaded", "info": catalogue.instance_info(spec.key)})
            await self.close()
            return
        # The two channels name their packets differently (checked against both SDKs' schemas).
        if self._always_load:
            await self.send({"type": "resolved", "info": catalogue.model_info(spec.key)})
        else:
            await self.send({"type": "startLoading", "identifier": spec.key, "info": catalogue.model_info(spec.key)})
        progress_type = "progress" if self._always_load else "loadProgress"

        async def progress(value: float) -> None:
            await self.send({"type": progress_type, "progress": value})

        if not await load_model(self.state, spec.key, self._cancel, progress):
            await self.fail(protocol.server_error(f"Loading {spec.key!r} was cancelled"))
            return
        success = "success" if self._always_load else "loadSuccess"
        await self.send({"type": success, "info": catalogue.instance_info(spec.key)})
        await self.close()
