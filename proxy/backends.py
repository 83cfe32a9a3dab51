"""Several LM Studio hosts: one `Bridge` per host, and the choice of the host a prediction runs on.

Design decisions (do not "simplify" them without reading why):
- The choice is a pure function (`pick`) of what the proxy knows of each host: a host that has
  the model loaded beats one that has it downloaded only; among those, the fewest active
  streams; then the order of `lmstudio.hosts`. A host that does not answer ("down") is chosen
  only when no answering host has the model: with one host this is the behaviour from before
  there were several (each request tries until LM Studio answers), bounded by the connect timeout.
- A prediction stays on its host: the pump holds that host's Bridge for its whole life, and a
  cancel goes to the SDK stream it started there.
- A host is down from a failure (a connection that fails or is lost, a listing that fails) until
  it answers again. `run()`, a task the app's lifespan owns, lists a down host's models again
  1 s after it went down, then at intervals that double, at most `lmstudio.retry_max_seconds`
  apart. A request that falls back to a down host, or `/health`, can bring it back sooner. A
  websocket that LM Studio closed is noticed with no round trip when a host is chosen or the
  metrics are read (`Bridge.link_down`), so the next request after a crash goes elsewhere.
- Models: each host's last listing. The catalogue (`models.ModelCatalog`) is the union over the
  hosts that are not down; loaded instances are deduplicated by identifier, downloaded models by
  key. A model the proxy loaded on a host since its listing counts as loaded there.
- Active streams are counted from `StreamRegistry.start` to the stream's end (and around a
  title's prediction). A request that waits between the choice and its start (an image upload,
  MCP tool discovery) is not counted by a choice made meanwhile: the choice is a balance, not a
  reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from proxy.bridge import START_HINT, Bridge
from proxy.config import LMStudioConfig
from proxy.errors import BackendUnavailable
from proxy.wire.bodies import LMStudioHealth, LMStudioHost

log = logging.getLogger("proxy.backends")

FIRST_RETRY_SECONDS = 1.0


class HostView(NamedTuple):
    """What the choice needs to know of one host."""

    up: bool
    loaded: frozenset[str]  # keys and instance identifiers
    downloaded: frozenset[str]  # keys
    active: int


def pick(hosts: Sequence[HostView], model: str) -> int | None:
    """The index of the host a prediction of `model` goes to, or None when no host has it.

    Loaded before downloaded, answering before down, then the fewest active streams, then the
    configured order.
    """
    best: tuple[int, int, int] | None = None
    for index, host in enumerate(hosts):
        if model in host.loaded:
            tier = 0
        elif model in host.downloaded:
            tier = 1
        else:
            continue
        rank = (tier if host.up else tier + 2, host.active, index)
        if best is None or rank < best:
            best = rank
    return None if best is None else best[2]


@dataclass(eq=False)
class Backend:
    """One LM Studio host: its bridge, its models as last listed, and how it is doing."""

    bridge: Bridge
    loaded: list[dict[str, Any]] = field(default_factory=list)
    downloaded: list[dict[str, Any]] = field(default_factory=list)
    listed: bool = False  # has answered a listing
    active: int = 0
    down_since: float | None = None  # time.monotonic() of the first failure of this outage
    error: str | None = None
    failure: BackendUnavailable | None = None  # the last listing's failure (its message is kept for one host)
    retry_at: float = 0.0
    stale: bool = False  # answered a request again since it was down, not listed since
    _names: tuple[object, object, frozenset[str], frozenset[str]] | None = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.bridge.configured_host or self.bridge.where()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    @property
    def state(self) -> Literal["up", "down", "unknown"]:
        if self.down_since is not None:
            return "down"
        return "up" if self.listed or self.bridge.host is not None else "unknown"

    def names(self) -> tuple[frozenset[str], frozenset[str]]:
        """The last listing as sets: the loaded models' keys and identifiers, the downloaded keys.

        Built once per listing (a listing replaces the lists, never changes them): every request
        looks a model up here twice (`ModelCatalog.resolve`, `Backends.choose`), and building the
        sets each time cost about 30 µs of its path to LM Studio on a slow machine.
        """
        cached = self._names
        if cached is None or cached[0] is not self.loaded or cached[1] is not self.downloaded:
            loaded = frozenset([*(m["identifier"] for m in self.loaded), *(m["key"] for m in self.loaded)])
            cached = self._names = (self.loaded, self.downloaded, loaded, frozenset(m["key"] for m in self.downloaded))
        return cached[2], cached[3]

    def view(self) -> HostView:
        listed, downloaded = self.names()
        here = self.bridge.loaded_here()  # models loaded through this bridge since the listing
        loaded = listed if listed.issuperset(here) else listed | frozenset(here)
        return HostView(self.down_since is None, loaded, downloaded, self.active)

    def status(self) -> LMStudioHost:
        status: LMStudioHost = {
            "host": self.name,
            "state": self.state,
            "active_streams": self.active,
            "loaded_models": [str(m["identifier"]) for m in self.loaded],
            "downloaded_models": [str(m["key"]) for m in self.downloaded],
        }
        if self.down_since is not None and self.error:
            status["error"] = self.error
        return status


class Backends:
    """The LM Studio hosts (`lmstudio.hosts`, or `lmstudio.host` as a one-host list)."""

    def __init__(self, config: LMStudioConfig, hosts: Sequence[str] | None = None) -> None:
        self.config = config
        names = list(hosts) if hosts else config.host_list()
        self.hosts = [Backend(Bridge(config, host=name)) for name in names]
        for backend in self.hosts:
            backend.bridge.on_change = functools.partial(self._changed, backend)
        self._wake = asyncio.Event()  # a host went down, or answered a request again: `run()` looks

    # -- what the proxy knows ----------------------------------------------------------------

    def where(self) -> str:
        """Where the proxy looks for LM Studio, in words."""
        return ", ".join(b.bridge.where() for b in self.hosts)

    @property
    def errors(self) -> int:
        return sum(b.bridge.errors for b in self.hosts)

    @property
    def reconnects(self) -> int:
        return sum(b.bridge.reconnects for b in self.hosts)

    def loaded(self) -> list[dict[str, Any]]:
        """The loaded instances of the hosts that are not down, each identifier once."""
        return _union((b.loaded for b in self.hosts if b.down_since is None), "identifier")

    def downloaded(self) -> list[dict[str, Any]]:
        """The downloaded models of the hosts that are not down, each key once."""
        return _union((b.downloaded for b in self.hosts if b.down_since is None), "key")

    def knows(self, model: str) -> bool:
        """Whether a host that is not down listed `model` (a loaded key or identifier, a downloaded key)."""
        for backend in self.hosts:
            if backend.down_since is None:
                loaded, downloaded = backend.names()
                if model in loaded or model in downloaded:
                    return True
        return False

    def down_holding(self, model: str) -> list[str]:
        """The down hosts whose last listing had `model`."""
        views = [(b, b.view()) for b in self.hosts if b.down_since is not None]
        return [b.name for b, view in views if model in view.loaded or model in view.downloaded]

    def statuses(self) -> list[LMStudioHost]:
        """Every host, as it is now (a closed connection is noticed here too)."""
        self._notice_closed()
        return [b.status() for b in self.hosts]

    # -- choosing ------------------------------------------------------------------------------

    def choose(self, model: str) -> Backend:
        """The host a prediction of `model` (an LM Studio key or identifier) runs on."""
        self._notice_closed()
        index = pick([b.view() for b in self.hosts], model)
        if index is None:
            raise BackendUnavailable(
                f"No LM Studio host has model '{model}' (looked at {self.where()}).", {"model": model}
            )
        return self.hosts[index]

    def started(self, backend: Backend) -> None:
        backend.active += 1

    def ended(self, backend: Backend) -> None:
        backend.active = max(0, backend.active - 1)

    async def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> str:
        """`Bridge.complete` on the host chosen for `model`, counted as an active stream there."""
        backend = self.choose(model)
        self.started(backend)
        try:
            return await backend.bridge.complete(
                model, messages, temperature=temperature, max_tokens=max_tokens, on_text=on_text
            )
        finally:
            self.ended(backend)

    # -- asking the hosts ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """List the models of the hosts that answer (and of down hosts due a retry).

        When none of those answers, the other down hosts are tried too, each bounded by the
        connect timeout: with nothing else to use, a request waits for LM Studio as it did with
        one host. Raises BackendUnavailable when no host answers.
        """
        now = time.monotonic()
        first = [b for b in self.hosts if b.down_since is None or b.retry_at <= now]
        await asyncio.gather(*(self._list(b) for b in first))
        if all(b.down_since is not None for b in self.hosts):
            await asyncio.gather(*(self._list(b) for b in self.hosts if b not in first))
        if all(b.down_since is not None for b in self.hosts):
            raise self._unreachable()

    async def health(self) -> LMStudioHealth:
        """Ask every host now (down ones too: that is what a health check is for)."""
        await asyncio.gather(*(self._list(b) for b in self.hosts))
        up = [b for b in self.hosts if b.down_since is None]
        health: LMStudioHealth = {"reachable": bool(up), "looked_at": self.where()}
        if up:
            health["host"] = up[0].bridge.host
            health["loaded_models"] = [str(m["identifier"]) for m in self.loaded()]
        else:
            health["error"] = self._unreachable().message
        health["hosts"] = [b.status() for b in self.hosts]
        return health

    async def _list(self, backend: Backend) -> None:
        try:
            backend.loaded, backend.downloaded = await backend.bridge.list_models()
        except BackendUnavailable as exc:
            backend.failure, backend.stale = exc, False  # down: retried on its schedule
            self._mark_down(backend, exc.message)
            return
        backend.listed, backend.stale, backend.failure = True, False, None
        self._mark_up(backend)

    def _unreachable(self) -> BackendUnavailable:
        if len(self.hosts) == 1 and self.hosts[0].failure is not None:
            return self.hosts[0].failure
        problems = "; ".join(f"{b.name}: {b.error or 'does not answer'}" for b in self.hosts)
        return BackendUnavailable(f"No LM Studio host answers ({problems}). {START_HINT}", {"looked_at": self.where()})

    # -- up and down -------------------------------------------------------------------------------

    def _notice_closed(self) -> None:
        for backend in self.hosts:
            if backend.down_since is None and backend.bridge.link_down():
                backend.bridge.lost()  # tells `_changed`

    def _changed(self, backend: Backend, up: bool, error: str | None) -> None:
        """The bridge connected (`up`), or a connection failed or was lost."""
        if up:
            if backend.down_since is not None or not backend.listed:
                backend.stale = True  # its models may have changed: `run()` lists them
                self._wake.set()
            self._mark_up(backend)
        else:
            self._mark_down(backend, error or "does not answer")

    def _mark_down(self, backend: Backend, error: str) -> None:
        now = time.monotonic()
        if backend.down_since is None:
            backend.down_since = now
            if len(self.hosts) > 1:  # with one host, the request that needed it says so
                log.warning("LM Studio host %s does not answer (%s): skipped while another host has the model",
                            backend.name, error)  # fmt: skip
        backend.error = error
        # The retry interval doubles with the outage's length: 1 s, 2, 4, … (idempotent: one
        # failure reported twice, by the bridge and by the listing, schedules the same retry).
        delay = min(self.config.retry_max_seconds, max(FIRST_RETRY_SECONDS, now - backend.down_since))
        backend.retry_at = now + delay
        self._wake.set()

    def _mark_up(self, backend: Backend) -> None:
        if backend.down_since is not None and len(self.hosts) > 1:
            log.warning("LM Studio host %s answers again", backend.name)
        backend.down_since, backend.error = None, None

    async def run(self) -> None:
        """Bring down hosts back: list their models when their retry is due (owned by the lifespan)."""
        while True:
            self._wake.clear()
            now = time.monotonic()
            due = [b for b in self.hosts if (b.down_since is not None and b.retry_at <= now) or b.stale]
            if due:
                for result in await asyncio.gather(*(self._list(b) for b in due), return_exceptions=True):
                    if isinstance(result, Exception):  # a bug: keep retrying the others, say so
                        log.error("retrying an LM Studio host failed", exc_info=result)
                for backend in due:
                    backend.stale = False
                    if backend.down_since is not None and backend.retry_at <= now:
                        self._mark_down(backend, backend.error or "does not answer")  # never a busy loop
                continue
            retries = [b.retry_at for b in self.hosts if b.down_since is not None]
            timeout = max(0.0, min(retries) - now) if retries else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def aclose(self) -> None:
        await asyncio.gather(*(b.bridge.aclose() for b in self.hosts))


def _union(listings: Any, field_name: str) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for listing in listings:
        for model in listing:
            if model[field_name] not in seen:
                seen.add(model[field_name])
                out.append(model)
    return out
