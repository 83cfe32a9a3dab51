"""The running streams by thread, and the answers of recent cancels (cancel is idempotent)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from proxy.backends import Backend, Backends
from proxy.config import Config
from proxy.errors import InsufficientPermissions, ResourceNotFound, StreamAlreadyActive
from proxy.metrics import Metrics
from proxy.spec import StreamSpec
from proxy.store import Store, Usage
from proxy.streams import CHECKPOINT_SECONDS, NO_ACTIVE_STREAM, NOT_YOUR_STREAM, ActiveStream
from proxy.wire.bodies import ActiveStream as ActiveStreamJson
from proxy.wire.bodies import CancelMode, CancelStreamResponse

log = logging.getLogger("proxy.registry")

# At most one SSE write per stream per 4 ms while tokens stream faster than that (over 250 a
# second: a real model's tokens come further apart and never wait). Each write costs the proxy a
# socket write and wakes the reader; measured at 1 stream at full speed (issue 18, alternated
# harness runs, relay proxy/direct): 2 ms 88 to 92 %, 4 ms 93 to 96 %, 8 ms 93 to 96 %. 4 ms keeps the
# added wait for a token a quarter of a 60 Hz frame.
WRITE_INTERVAL = 0.004
# With many streams the interval grows so that all of them together make about this many writes a
# second (a write is the largest cost per token the proxy controls, far more than its socket call:
# two task wake-ups, a timer, the ASGI send chain, the kernel's loopback path), and text
# never waits longer than MAX_WRITE_INTERVAL: 32 streams at full speed wait 32 ms, 100 or more
# 100 ms, ten writes a second, still smooth to a reader. A real model's tokens come further apart
# than the interval and never wait. Measured (issue 18, bench alternated): 2000 writes a second and
# a 25 ms cap spent a third of the proxy's own CPU per token on writes at 128 streams.
WRITES_PER_SECOND = 1000
MAX_WRITE_INTERVAL = 0.1
# When the proxy itself is the bottleneck (its event loop's thread busy nearly all the time, as
# with 128 streams at full speed on two cores), every stream already trails LM Studio, and the
# writes are what it can still cut: half as many, text waiting up to 200 ms (five updates a
# second). Entered at 90 % busy over a BUSY_WINDOW, left under 75 %. Measured (issue 18, proxy and
# simulator on their own cores, 2 x 128 streams of 500 tokens, six alternated rounds): the
# proxy's CPU per token, median 65.3 µs with the normal budget, 63.1 µs with this one.
SATURATED_WRITES_PER_SECOND = 500
SATURATED_MAX_WRITE_INTERVAL = 0.2
SATURATED_ENTER, SATURATED_LEAVE = 0.9, 0.75
# How busy the loop is, measured over windows this long: a burst of streams (32 of 500 tokens at
# full speed last about a second) is saturated within a tenth of a second of its start, not only
# after a whole half-second tick. Ten timer turns a second while streams run cost nothing measurable.
BUSY_WINDOW = 0.1
# Running answers saved in one transaction (`save_running`). One commit per stream cost ~35 µs of
# CPU on SQLite, ~15 µs per stream in one of 128; 16 gets most of that, and keeps one save's hold
# on the event loop short (~0.25 ms on SQLite; with PostgreSQL each statement is a round trip).
CHECKPOINT_BATCH = 16


@dataclass
class _Ended:
    """A stream stopped by a cancel or a disconnect, remembered for later cancels."""

    owner: str
    response_id: str
    thread_created: bool
    stop_elapsed: float
    body: CancelStreamResponse | None
    expires: float
    tools_ran: bool = False  # an MCP tool had started: a late cancel keeps the turn too


class StreamRegistry:
    """The running streams by thread, plus recent cancel answers (cancel is idempotent)."""

    REMEMBER_CANCELS_SECONDS = 600.0
    REMEMBER_CANCELS = 1024  # at most this many (oldest forgotten first): memory stays flat under churn
    stream_class: type[ActiveStream] = ActiveStream  # replicas.ReplicaRegistry runs its own kind

    def __init__(self, config: Config, store: Store, backends: Backends, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.store = store
        self.backends = backends
        self.streams: dict[str, ActiveStream] = {}
        self.settling: set[asyncio.Task[None]] = set()  # pumps of settled streams still draining
        self._placed: dict[str, Backend] = {}  # the LM Studio host of each running stream, by response id
        self._ended: OrderedDict[str, _Ended] = OrderedDict()  # oldest first
        self.accepting = True
        self._ticker: asyncio.Task[None] | None = None
        self.saturated = False  # see SATURATED_WRITES_PER_SECOND; measured by `_tick`

    @property
    def write_interval(self) -> float:
        """Seconds between two SSE writes of one stream's text, scaled by the number of streams
        (and longer while the proxy is saturated)."""
        if self.saturated:
            budget, longest = SATURATED_WRITES_PER_SECOND, SATURATED_MAX_WRITE_INTERVAL
        else:
            budget, longest = WRITES_PER_SECOND, MAX_WRITE_INTERVAL
        return min(longest, max(WRITE_INTERVAL, len(self.streams) / budget))

    def note_busy(self, busy: float) -> None:
        """The share of the last BUSY_WINDOW the event loop's thread spent computing (0 to 1)."""
        was = self.saturated
        self.saturated = busy >= (SATURATED_LEAVE if was else SATURATED_ENTER)
        if self.saturated and not was:
            log.info("the proxy is saturated (its event loop %.0f %% busy): fewer SSE writes", busy * 100)
        elif was and not self.saturated:
            log.info("the proxy is no longer saturated (its event loop %.0f %% busy)", busy * 100)

    def check_free(self, thread_id: str) -> None:
        if thread_id in self.streams:
            raise StreamAlreadyActive("A response is already streaming on this thread.", {"thread_id": thread_id})

    def start(self, spec: StreamSpec, backend: Backend | None = None) -> ActiveStream:
        """Register and start a stream on `backend` (default: the host chosen for its model); call
        in the same step as `check_free` (no await between)."""
        self.check_free(spec.thread_id)
        if backend is None:
            backend = self.backends.choose(spec.model)
        stream = self.stream_class(spec, self)
        self.streams[spec.thread_id] = stream
        self._ended.pop(spec.thread_id, None)
        self._placed[spec.response_id] = backend
        self.backends.started(backend)
        loop = asyncio.get_running_loop()
        stream.task = loop.create_task(stream.run(backend.bridge, self.store), name=f"pump-{spec.response_id}")
        if self._ticker is None or self._ticker.done():
            self._ticker = loop.create_task(self._tick(), name="streams-tick")
        return stream

    async def _tick(self) -> None:
        """One timer for all streams while there are any (`start()` brings it back): whether the
        proxy is saturated (every BUSY_WINDOW), then heartbeats and the running answers' checkpoints."""
        loop = asyncio.get_running_loop()
        period = min(self.config.streaming.heartbeat_seconds / 4, CHECKPOINT_SECONDS / 2)
        window = min(BUSY_WINDOW, period)
        cpu, wall = time.thread_time(), loop.time()
        due = wall + period
        try:
            while self.streams:
                await asyncio.sleep(window)
                now, used = loop.time(), time.thread_time()
                self.note_busy((used - cpu) / max(now - wall, 1e-3))
                cpu, wall = used, now
                if now >= due - window / 2:  # (a sleep may end a hair early)
                    due = now + period
                    self.heartbeats(now)
                    await self.save_running(now)
        finally:
            self.saturated = False

    def heartbeats(self, now: float) -> None:
        """A `response.heartbeat` to every stream silent for `heartbeat_seconds` (loop time `now`).

        (A timeout around every wait for the next event cost more than this, per token.)
        """
        interval = self.config.streaming.heartbeat_seconds
        for stream in list(self.streams.values()):
            if stream.spec.streaming and not stream.outbox.closed and now - stream.last_sent >= interval:
                stream.last_sent = now
                stream.outbox.push({"event": "response.heartbeat", "thread_id": stream.thread_id})

    async def save_running(self, now: float) -> None:
        """Checkpoint every stream that is due (`ActiveStream.checkpoint_due`), CHECKPOINT_BATCH
        streams to a transaction, not a commit per stream and second.

        The event loop gets a turn between two transactions, so one save never holds every
        stream up for long (a PostgreSQL statement is a round trip on the loop). Each batch is
        read and saved in one step: a stream that ends during a turn is not saved after its end.
        """
        streams = list(self.streams.values())
        for start in range(0, len(streams), CHECKPOINT_BATCH):
            if start:
                await asyncio.sleep(0)
            due = [s.checkpoint_row(now) for s in streams[start : start + CHECKPOINT_BATCH] if s.checkpoint_due(now)]
            if not due:
                continue
            try:
                self.store.checkpoints(due)  # a storage fault is logged there and returns False
            except Exception:  # anything else must not end the heartbeats of every stream
                log.exception("saving the running answers failed")

    def finished(self, stream: ActiveStream, usage: Usage) -> None:
        if self.streams.get(stream.thread_id) is stream:
            del self.streams[stream.thread_id]
        task = stream.task
        if task is not None and task is not asyncio.current_task() and not task.done():
            # Settled at a stop: its pump still drains LM Studio's final counts (awaited at shutdown).
            self.settling.add(task)
            task.add_done_callback(self.settling.discard)
        backend = self._placed.pop(stream.spec.response_id, None)
        if backend is not None:
            self.backends.ended(backend)
        m = self.metrics
        m.streams.labels(stream.outcome or "unknown").inc()
        m.tokens.inc(usage.output_tokens)
        if stream.first_token_at is not None:
            m.ttft.observe(stream.first_token_at - stream.spec.accepted_at)
        if stream.outcome == "cancelled" and stream.stop_reason == "cancel" and stream.cancel_mode:
            m.cancels.labels(stream.cancel_mode).inc()
        elif stream.outcome == "cancelled" and stream.stop_reason == "disconnect":
            m.disconnects.inc()
        self._forget_old_cancels()
        if stream.outcome == "cancelled" and stream.stop_reason in ("cancel", "disconnect"):
            self._ended.pop(stream.thread_id, None)
            self._ended[stream.thread_id] = _Ended(
                stream.spec.owner,
                stream.spec.response_id,
                stream.spec.thread_created,
                stream.stop_elapsed,
                stream.cancel_body,
                time.monotonic() + self.REMEMBER_CANCELS_SECONDS,
                stream.tools_started > 0,
            )

    def _forget_old_cancels(self) -> None:
        now = time.monotonic()
        while self._ended:
            oldest = next(iter(self._ended.values()))
            if oldest.expires >= now and len(self._ended) < self.REMEMBER_CANCELS:
                break
            self._ended.popitem(last=False)

    def cancel_result(self, elapsed: float, *, tools_ran: bool = False) -> tuple[CancelMode, CancelStreamResponse]:
        """The cancel mode for a stop `elapsed` seconds after acceptance, and the endpoint's body.

        Once a tool the proxy runs (MCP) has started, a stop is always keep_partial: deleting
        the turn would hide that the tool ran (its effects are real) and invite a second run.
        """
        quick = elapsed < self.config.cancel.quick_edit_seconds and not tools_ran
        mode: CancelMode = "quick_edit" if quick else "keep_partial"
        body: CancelStreamResponse = {
            "success": True,
            "cancel_mode": mode,
            "elapsed_seconds": round(elapsed, 3),
            "user_message_deleted": quick,
            "assistant_response_deleted": quick,
            "partial_content_saved": not quick,
        }
        return mode, body

    async def cancel(self, thread_id: str, owner: str) -> CancelStreamResponse:
        stream = self.streams.get(thread_id)
        if stream is not None:
            if stream.spec.owner != owner:
                raise InsufficientPermissions(NOT_YOUR_STREAM)
            return await stream.cancel()
        ended = self._ended.get(thread_id)
        if ended is None or ended.expires < time.monotonic():
            raise ResourceNotFound(NO_ACTIVE_STREAM)
        if ended.owner != owner:
            raise InsufficientPermissions(NOT_YOUR_STREAM)
        if ended.body is None:
            # The client disconnected first (as the seed's Stop button does), then cancelled.
            mode, body = self.cancel_result(ended.stop_elapsed, tools_ran=ended.tools_ran)
            self.store.apply_late_cancel(ended.response_id, mode, delete_thread_if_empty=ended.thread_created)
            ended.body = body
            self.metrics.cancels.labels(mode).inc()
        return ended.body

    def for_owner(self, owner: str) -> list[ActiveStream]:
        return [s for s in self.streams.values() if s.spec.owner == owner]

    def active(self, owner: str) -> list[ActiveStreamJson]:
        """The owner's running streams, as `GET /v1/model/response/active` lists them."""
        return [
            {
                "thread_id": s.thread_id,
                "response_id": s.spec.response_id,
                "model": s.spec.model,
                "elapsed_seconds": round(s.elapsed(), 3),
                "partial_content_length": s.partial_length(),
                "cancel_mode_now": s.mode_now(),
                "stopping": s.stop_reason is not None,
                "running_tool": s.running_tool,
            }
            for s in self.for_owner(owner)
        ]

    def streaming(self, thread_ids: list[str]) -> set[str]:
        """Which of these threads have a running stream (a thread's `status`, the 409s of thread edits)."""
        return {t for t in thread_ids if t in self.streams}

    async def shutdown(self) -> None:
        """Stop accepting, stop every running prediction, and wait for the pumps to record it."""
        self.accepting = False
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        streams = list(self.streams.values())
        await asyncio.gather(*(s.request_cancel("shutdown") for s in streams), return_exceptions=True)
        tasks = [s.task for s in streams if s.task is not None] + list(self.settling)
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.cancel.drain_timeout_seconds + 1)
