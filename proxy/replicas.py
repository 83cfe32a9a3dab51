"""Several proxies on one PostgreSQL database: any replica cancels any stream; leases recover a dead one's.

With SQLite the proxy is one process and `registry.StreamRegistry` is all there is. With
PostgreSQL each proxy process is a replica: `ReplicaRegistry` runs its streams as before
(`ReplicaStream` is an `ActiveStream` that tells the database what only it knows) and puts
everything other replicas must see in the `responses` row.

Design decisions (do not "fix" these without reading why):
- The database is the truth, notifications only wake. A cancel, on any replica, locks the
  thread's latest response row and decides there, by the database's clock (seconds since the
  row's `accepted_epoch`): it stores `stop_request = 'cancel'` and the endpoint's body
  (`cancel_body`), and NOTIFYs the owner (delivered at commit). The owner learns of it from
  that NOTIFY (its LISTEN connection, in a thread of its own) *or* from polling its running
  responses every `replicas.poll_seconds`, so a lost notification (a dropped LISTEN
  connection; it listens again at once) delays a cancel by at most that, never loses it.
- The linearisation point of `streams.py` still holds across replicas: the owner claims the
  outcome (`Store.claim_outcome`: `ending = 1` on the row, under the row lock) right before it
  decides. A cancel committed before the claim is the outcome (even if LM Studio happened to
  finish); one after it waits for the outcome and gets a 404 (completed), or applies its mode
  to a response a disconnect stopped (as on one process).
- A cancel answers only once the outcome is committed: it waits for the owner (its
  `streams.ActiveStream.finished` when local; else the `ENDED` notification or polling the
  row). If the owner's lease runs out meanwhile, the waiting replica ends the response itself
  from its checkpointed text (`Store.recover_dead_replicas`), with the mode already stored.
  Repeated and concurrent cancels on any replica get the first stored body.
- A disconnect or a shutdown is recorded on the row when it happens (`note_stop`), so a cancel
  that follows a disconnect gets the mode of the disconnect's moment, as on one process
  (measured by the owner's clock: it alone saw the client go).
- Leases: each replica renews `replicas.lease_until` (database clock) every third of
  `lease_seconds` and, in the same beat, ends the responses of replicas whose lease ran out
  (`interrupted`, text kept). `SKIP LOCKED` lets replicas do this together without doing it
  twice. The file lock / advisory lock of one process is not used on PostgreSQL.
- One running response per thread is the partial unique index `responses_one_running`: the
  409 is the database's answer, not a check that could go stale between replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any, cast

from proxy.backends import Backend, Backends
from proxy.config import Config
from proxy.errors import InsufficientPermissions, ProxyError, ResourceNotFound, StorageUnavailable
from proxy.metrics import Metrics
from proxy.registry import StreamRegistry
from proxy.spec import StreamSpec
from proxy.store import ENDED_CHANNEL, STOP_CHANNEL, Checkpoint, Store, Usage, new_id
from proxy.streams import NO_ACTIVE_STREAM, NOT_YOUR_STREAM, ActiveStream
from proxy.wire.bodies import ActiveStream as ActiveStreamJson
from proxy.wire.bodies import CancelMode, CancelStreamResponse

log = logging.getLogger("proxy.replicas")

RELISTEN_SECONDS = 0.2  # after a dropped LISTEN connection, between attempts to listen again
NOTIFIES_TIMEOUT = 0.5  # how long the listener blocks at most before it looks at its stop flag


class ReplicaStream(ActiveStream):
    """An `ActiveStream` that records on its row what other replicas need: its stops, its tools, its end."""

    registry: ReplicaRegistry
    _tools_noted = False  # the row says a tool the proxy runs has started

    async def request_cancel(self, reason: str) -> None:
        if reason != "cancel" and self.stop_reason is None and self.outcome is None:
            self.registry.note(lambda store: store.note_stop(self.spec.response_id, reason, self.elapsed()))
        await super().request_cancel(reason)

    def checkpoint_row(self, now: float) -> Checkpoint:
        if self.tools_started and not self._tools_noted:
            self._tools_noted = True
            self.registry.note(lambda store: store.note_tools_ran(self.spec.response_id))
        return super().checkpoint_row(now)

    def _finish(self, store: Store, usage: Usage, error: ProxyError | None) -> None:
        self.registry.claim(self)
        super()._finish(store, usage, error)


class Listener:
    """A thread that LISTENs on its own connection and hands notifications to the event loop.

    Owned by `ReplicaRegistry.run`, which starts it and joins it. A dropped connection is
    replaced at once; each new connection calls `on_listening` (a notification sent while
    there was none is lost: the owner then polls at once).
    """

    def __init__(self, store: Store, on_notify: Callable[[str, str], None], on_listening: Callable[[], None]) -> None:
        self._store = store
        self._on_notify = on_notify
        self._on_listening = on_listening
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replicas-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        self._thread.join()

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                conn = self._store.open_listener([STOP_CHANNEL, ENDED_CHANNEL])
            except Exception as exc:
                if not failing:
                    log.warning("cannot LISTEN on the database (%s); polling meanwhile", exc)
                failing = True
                self._stop.wait(1.0)
                continue
            if failing:
                log.warning("listening on the database again")
            failing = False
            self._on_listening()
            try:
                with conn:
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=NOTIFIES_TIMEOUT):
                            self._on_notify(notify.channel, notify.payload)
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("the LISTEN connection was lost (%s); listening again", " ".join(str(exc).split()))
                self._stop.wait(RELISTEN_SECONDS)


class ReplicaRegistry(StreamRegistry):
    """The running streams of this replica, and cancels, /active and thread status across all replicas."""

    stream_class = ReplicaStream

    def __init__(self, config: Config, store: Store, backends: Backends, metrics: Metrics) -> None:
        super().__init__(config, store, backends, metrics)
        self.replica_id = new_id("rep")
        self._wake = asyncio.Event()  # a cancel for one of ours was notified (or a LISTEN began)
        self._waiting: dict[str, set[asyncio.Event]] = {}  # response id → cancels waiting for its outcome
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lease_lost = False

    def start(self, spec: StreamSpec, backend: Backend | None = None) -> ActiveStream:
        stream = super().start(spec, backend)
        self._wake.set()  # `run` polls for stop requests while streams run: from now on
        return stream

    # -- what the streams tell the database ----------------------------------------------

    def note(self, write: Callable[[Store], None]) -> None:
        """A write that helps other replicas; a stream never fails for it (the store logs the fault)."""
        with contextlib.suppress(StorageUnavailable):
            write(self.store)

    def claim(self, stream: ActiveStream) -> None:
        """Right before the outcome is decided: a cancel stored first (on any replica) is the outcome."""
        try:
            row = self.store.claim_outcome(stream.spec.response_id, stream.stop_reason, stream.stop_elapsed)
        except StorageUnavailable:
            return  # the outcome cannot be written either; it is kept and written later (store)
        if row is not None and row["stop_request"] == "cancel" and row["cancel_body"] and stream.cancel_body is None:
            body = cast(CancelStreamResponse, json.loads(row["cancel_body"]))
            if stream.stop_reason is None:
                stream.stop_elapsed = float(row["stop_elapsed"] or 0.0)
            stream.stop_reason = "cancel"
            stream.cancel_mode, stream.cancel_body = body["cancel_mode"], body

    def finished(self, stream: ActiveStream, usage: Usage) -> None:
        super().finished(stream, usage)
        if stream.stop_reason is not None:  # a cancel may wait for this on another replica
            self.note(lambda store: store.notify_ended(stream.spec.response_id))

    # -- cancel, /active, status: from the database ---------------------------------------

    async def cancel(self, thread_id: str, owner: str) -> CancelStreamResponse:
        loop = asyncio.get_running_loop()
        config = self.config
        # The owner's drain, a tool it may be running (it finishes first), and its lease if it died meanwhile.
        wait = config.cancel.drain_timeout_seconds + config.tools.call_timeout_seconds + config.replicas.lease_seconds
        deadline = loop.time() + wait + 5
        while True:
            ticket = self.store.decide_cancel(thread_id, owner, self._decide, self.REMEMBER_CANCELS_SECONDS)
            if ticket.kind == "missing":
                raise ResourceNotFound(NO_ACTIVE_STREAM)
            if ticket.kind == "forbidden":
                raise InsufficientPermissions(NOT_YOUR_STREAM)
            if ticket.late_mode is not None:
                self.metrics.cancels.labels(ticket.late_mode).inc()
            if ticket.kind == "answered":
                return cast(CancelStreamResponse, ticket.body)
            stream = self._running(ticket.response_id)
            if stream is not None and ticket.decided:
                return await self._cancel_here(stream, cast(CancelStreamResponse, ticket.body))
            await self._until_ended(ticket.response_id, deadline)

    def _decide(self, elapsed: float, tools_ran: bool) -> tuple[str, dict[str, Any]]:
        mode, body = self.cancel_result(elapsed, tools_ran=tools_ran)
        return mode, dict(body)

    async def _cancel_here(self, stream: ActiveStream, body: CancelStreamResponse) -> CancelStreamResponse:
        """The cancelled stream runs here: stop it with the stored body, answer once its outcome is committed."""
        if stream.cancel_body is None and stream.stop_reason in (None, "disconnect"):
            stream.cancel_mode, stream.cancel_body = body["cancel_mode"], body
        await stream.request_cancel("cancel")
        config = self.config
        tool_time = config.tools.call_timeout_seconds if stream.running_tool is not None else 0.0  # it finishes first
        async with asyncio.timeout(config.cancel.drain_timeout_seconds + tool_time + 5):
            await stream.finished.wait()
        if stream.outcome != "cancelled" or stream.cancel_body is None:
            raise ResourceNotFound(NO_ACTIVE_STREAM)
        return stream.cancel_body

    async def _until_ended(self, response_id: str, deadline: float) -> None:
        """Wait until another replica has committed the response's outcome (or end it, if that one is dead)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiting.setdefault(response_id, set()).add(event)
        try:
            while True:
                status, owner_alive = self.store.response_state(response_id)
                if status != "in_progress":
                    return
                if not owner_alive:
                    recovered = self.store.recover_dead_replicas()
                    if recovered:
                        log.warning("ended %d response(s) of replicas whose lease ran out", len(recovered))
                    continue
                if loop.time() > deadline:
                    # The stop is stored (a cancel again gets its answer once the end is); its end is not yet.
                    raise StorageUnavailable(
                        "The proxy running this stream has not recorded its end in time; cancel again to get "
                        "the answer once it has."
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.replicas.poll_seconds):
                        await event.wait()
                event.clear()
        finally:
            waiting = self._waiting.get(response_id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiting[response_id]

    def _running(self, response_id: str) -> ActiveStream | None:
        return next((s for s in self.streams.values() if s.spec.response_id == response_id), None)

    def active(self, owner: str) -> list[ActiveStreamJson]:
        """Every replica's running streams of the owner; this replica's own show their live partial length."""
        local = {s.spec.response_id: s for s in self.streams.values()}
        listed: list[ActiveStreamJson] = []
        for row in self.store.running_responses(owner):
            stream = local.get(row["id"])
            elapsed = float(row["elapsed"] or 0.0)
            mode: CancelMode = self.cancel_result(elapsed, tools_ran=bool(row["tools_ran"]))[0]
            listed.append(
                {
                    "thread_id": row["thread_id"],
                    "response_id": row["id"],
                    "model": row["model"] or "",
                    "elapsed_seconds": round(elapsed, 3),
                    "partial_content_length": stream.partial_length() if stream else int(row["partial"]),
                    "cancel_mode_now": mode,
                    "stopping": row["stop_request"] is not None
                    or (stream is not None and stream.stop_reason is not None),
                    "running_tool": stream.running_tool if stream else None,
                }
            )
        return listed

    def streaming(self, thread_ids: list[str]) -> set[str]:
        return self.store.running_threads(thread_ids)

    # -- the replica's life -----------------------------------------------------------

    def register(self) -> None:
        """Take a lease (the lifespan, before serving); StorageUnavailable if the database cannot be used."""
        self.store.register_replica(
            self.replica_id, self.config.replicas.lease_seconds, socket.gethostname(), os.getpid()
        )
        log.info("replica %s (lease %g s)", self.replica_id, self.config.replicas.lease_seconds)

    async def run(self) -> None:
        """Renew the lease, recover dead replicas' responses, and stop ours that a cancel asks to stop.

        Owned by the lifespan (cancelled at shutdown); owns the LISTEN thread.
        """
        loop = self._loop = asyncio.get_running_loop()
        listener = Listener(self.store, self._notified, self._listening)
        listener.start()
        beat = self.config.replicas.lease_seconds / 3
        poll = self.config.replicas.poll_seconds
        next_beat = loop.time()
        try:
            while True:
                try:
                    if loop.time() >= next_beat:
                        next_beat = loop.time() + beat
                        self._beat()
                    if self.streams:
                        await self._stop_requested()
                except Exception:  # a bug: log it, but never stop renewing the lease over it
                    log.exception("replica %s: looking after the lease and stop requests failed", self.replica_id)
                wait = min(poll, next_beat - loop.time()) if self.streams else next_beat - loop.time()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(wait, 0.0)):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            listener.stop()
            await asyncio.to_thread(listener.join)

    def _beat(self) -> None:
        if not self.accepting:
            return  # shutting down: the lease ends with `shutdown`, not renewed meanwhile
        try:
            if not self.store.renew_lease(self.replica_id, self.config.replicas.lease_seconds):
                if not self._lease_lost:
                    log.error(
                        "replica %s: its lease had run out (the event loop or the database stalled for longer "
                        "than replicas.lease_seconds); other replicas may have ended its running responses",
                        self.replica_id,
                    )
                self._lease_lost = True
            else:
                self._lease_lost = False
            recovered = self.store.recover_dead_replicas()
        except StorageUnavailable:
            return  # logged by the store; the next beat tries again
        if recovered:
            log.warning(
                "marked %d response(s) of replicas whose lease ran out: %s", len(recovered), ", ".join(recovered)
            )

    async def _stop_requested(self) -> None:
        try:
            requests = self.store.stop_requests(self.replica_id)
        except StorageUnavailable:
            return
        for response_id, body in requests:
            stream = self._running(response_id)
            if stream is None or stream.cancel_body is not None or stream.stop_reason not in (None, "disconnect"):
                continue  # not ours (yet), applied already, or stopping for a shutdown (its claim decides)
            stream.cancel_mode, stream.cancel_body = body["cancel_mode"], cast(CancelStreamResponse, body)
            await stream.request_cancel("cancel")

    def _notified(self, channel: str, payload: str) -> None:
        """In the LISTEN thread: hand a notification to the loop."""
        if channel == STOP_CHANNEL and payload != self.replica_id:
            return
        self._call_soon(lambda: self._on_notify(channel, payload))

    def _listening(self) -> None:
        """In the LISTEN thread: a (new) connection listens; what was sent before it may be lost: poll now."""
        self._call_soon(self._wake_all)

    def _call_soon(self, callback: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(callback)

    def _on_notify(self, channel: str, payload: str) -> None:
        if channel == STOP_CHANNEL:
            self._wake.set()
        else:
            for event in self._waiting.get(payload, ()):
                event.set()

    def _wake_all(self) -> None:
        self._wake.set()
        for waiting in self._waiting.values():
            for event in waiting:
                event.set()

    async def shutdown(self) -> None:
        await super().shutdown()
        with contextlib.suppress(StorageUnavailable):
            self.store.retire_replica(self.replica_id)
