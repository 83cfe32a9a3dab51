"""Model loading: the `getOrLoad` and `loadModel` channels and the JIT load a prediction triggers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from proxy.simulator import protocol
from proxy.simulator.catalogue import IdentifierTaken, Instance
from proxy.simulator.channel import Channel, Connection
from proxy.simulator.clock import pause
from proxy.simulator.models import ModelType
from proxy.simulator.state import SimState

LOAD_STEPS = 10

ProgressCallback = Callable[[float], Awaitable[None]]


async def load_model(
    state: SimState,
    key: str,
    stop: asyncio.Event,
    on_progress: ProgressCallback | None = None,
    *,
    identifier: str | None = None,
    jit: bool = True,
    ttl_ms: int | None = None,
    reuse: bool = False,
) -> Instance | None:
    """Load an instance of `key` over `load_seconds`; None if `stop` fired first (nothing loaded).
    With `reuse`, an instance that appeared meanwhile is returned instead of a second one."""
    step = state.settings_for(key).load_seconds / LOAD_STEPS
    for i in range(1, LOAD_STEPS + 1):
        if await pause(step, stop):
            return None
        if on_progress is not None:
            await on_progress(i / LOAD_STEPS)
    with state.changing():
        if reuse:  # a prediction's JIT load: concurrent predictions share the first instance
            return state.catalogue.mark_loaded(key)
        return state.catalogue.load(key, identifier, jit=jit, ttl_ms=ttl_ms)


def _ttl(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class LoadChannel(Channel):
    """`getOrLoad`: alreadyLoaded, or [unloadingOtherJITModel…] startLoading → loadProgress… → loadSuccess;
    `loadModel`: resolved → progress… → success (always a new instance)."""

    def __init__(
        self,
        conn: Connection,
        channel_id: int,
        state: SimState,
        params: Any,
        *,
        kind: ModelType,
        always_load: bool,
    ) -> None:
        super().__init__(conn, channel_id, state)
        params = params if isinstance(params, dict) else {}
        query = params.get("modelKey") if always_load else params.get("identifier")
        self._query = query if isinstance(query, str) else ""
        identifier = params.get("identifier") if always_load else None
        self._identifier = identifier if isinstance(identifier, str) and identifier else None
        self._ttl_ms = _ttl(params.get("ttlMs") if always_load else params.get("loadTtlMs"))
        self._kind: ModelType = kind
        self._always_load = always_load
        self._cancel = asyncio.Event()

    def receive(self, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "cancel":
            self._cancel.set()

    async def run(self) -> None:
        catalogue = self.state.catalogue
        if not self._always_load:
            with self.state.changing():
                instance = catalogue.instance(self._query, self._kind)
                if instance is not None:
                    catalogue.touch(instance)
            if instance is not None:
                await self.send({"type": "alreadyLoaded", "info": instance.info()})
                await self.close()
                return
        spec = catalogue.resolve(self._query, self._kind)
        if spec is None:
            loaded = [i.identifier for i in catalogue.instances(self._kind)]
            await self.fail(protocol.model_not_found(self._query, loaded))
            return
        if self._identifier is not None and catalogue.instance(self._identifier) is not None:
            await self.fail(protocol.server_error(f'A model with the identifier "{self._identifier}" already exists'))
            return
        # The two channels name their packets differently (checked against both SDKs' schemas).
        if self._always_load:
            await self.send({"type": "resolved", "info": spec.info()})
        else:
            for other in catalogue.jit_instances():
                with self.state.changing():
                    catalogue.unload(other.identifier)
                await self.send({"type": "unloadingOtherJITModel", "info": other.info()})
            await self.send({"type": "startLoading", "identifier": spec.key, "info": spec.info()})
        progress_type = "progress" if self._always_load else "loadProgress"

        async def progress(value: float) -> None:
            await self.send({"type": progress_type, "progress": value})

        try:
            instance = await load_model(
                self.state,
                spec.key,
                self._cancel,
                progress,
                identifier=self._identifier,
                jit=not self._always_load,
                ttl_ms=self._ttl_ms,
            )
        except IdentifierTaken:  # a concurrent load took it while this one was loading
            await self.fail(protocol.server_error(f'A model with the identifier "{self._identifier}" already exists'))
            return
        if instance is None:
            await self.fail(protocol.server_error(f"Loading {spec.key!r} was cancelled"))
            return
        success = "success" if self._always_load else "loadSuccess"
        await self.send({"type": success, "info": instance.info()})
        await self.close()
