"""Running predictions: one `ActiveStream` per request, kept in a registry keyed by thread.

How a stream ends (do not "fix" these without reading why):
- The SDK stream is consumed by a pump task owned by the `ActiveStream`, never by the HTTP
  response: when Starlette cancels the response on a client disconnect, the SDK would
  close the channel without sending `cancel`, and LM Studio would keep generating.
- Stopping is always the same path: `request_cancel()` records why (the cancel endpoint,
  a client disconnect, a server shutdown), sends LM Studio's `cancel` at once if the
  prediction has started (the pump sends it right after `start()` otherwise, and a model
  still loading is abandoned before any prediction exists), and shortens the pump's
  deadline to the drain timeout. The pump then drains the stream to LM Studio's final
  `userStopped` result, so the partial text and the token counts are kept even when LM
  Studio never answers the cancel.
- The linearisation point is the pump's decision after the drain: if a stop was
  requested by then, the outcome is that stop (even if LM Studio happened to finish);
  otherwise the outcome is `completed` and later cancels get 404. Both run on the one
  event loop, so there is no window in between.
- The store change of an outcome is committed before its terminal SSE event is queued and
  before the cancel endpoint answers.
- Fragments go to the client through an `Outbox`, not a bounded queue that would block
  the pump: deltas that wait coalesce into one, so a slow reader costs memory bounded by
  the answer itself while LM Studio is still drained at full speed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from proxy import sse
from proxy.bridge import Bridge, Prediction
from proxy.config import Config
from proxy.errors import (
    BackendUnavailable,
    InsufficientPermissions,
    InternalError,
    ProxyError,
    ResourceNotFound,
    ShuttingDown,
    StreamAlreadyActive,
)
from proxy.metrics import Metrics
from proxy.outbox import TEXT_EVENTS, Outbox
from proxy.render import render
from proxy.store import Store, Usage

log = logging.getLogger("proxy.streams")

CHECKPOINT_SECONDS = 1.0
WRITE_INTERVAL = 0.002  # at most one SSE write per stream per 2 ms while tokens stream faster than that
WRITES_PER_SECOND = 2000  # with many streams, the interval grows so all of them together stay near this
MAX_WRITE_INTERVAL = 0.025  # but text never waits longer than this (well under what a reader notices)
NO_ACTIVE_STREAM = "No active stream found for this thread"


@dataclass
class StreamSpec:
    """What an accepted request asks of LM Studio, and where its result goes."""

    owner: str
    thread_id: str
    response_id: str
    message_ids: list[str]
    thread_created: bool
    model: str
    messages: list[dict[str, str]]
    prediction_config: dict[str, Any]
    output_mode: str
    trace_id: str
    streaming: bool = True
    accepted_at: float = field(default_factory=time.monotonic)


class ActiveStream:
    """One running prediction: its pump task, its partial text, and how it ended."""

    def __init__(self, spec: StreamSpec, registry: StreamRegistry) -> None:
        self.spec = spec
        self.registry = registry
        self.outbox = Outbox()
        if spec.streaming:  # the first event; it goes out with whatever else is ready by then
            self.outbox.push(
                {"event": "response.processing", "status": "processing", "thread_id": spec.thread_id,
                 "message": "Request accepted"}
            )  # fmt: skip
        self.parts: list[str] = []
        self.reasoning: list[str] = []
        self.stop_reason: str | None = None  # why a stop was requested: cancel|disconnect|shutdown
        self.stop_elapsed = 0.0  # seconds from acceptance to the stop request
        self.cancel_mode: str | None = None
        self.cancel_body: dict[str, Any] | None = None
        self.outcome: str | None = None  # completed|cancelled|failed once decided
        self.final: dict[str, Any] | None = None  # the non-streaming body / terminal event data
        self.finished = asyncio.Event()
        # Set once LM Studio has been sent the prediction (or a model load began, or the pump
        # stopped): the handler sets up the HTTP response only then, so that work overlaps
        # LM Studio's instead of delaying the request to it.
        self.sent = asyncio.Event()
        self.prediction: Prediction | None = None
        self.task: asyncio.Task[None] | None = None
        self._stop_requested = asyncio.Event()
        self._deadline: asyncio.Timeout | None = None
        self._last_checkpoint = 0.0
        self._load_reported = -1.0
        self.first_token_at: float | None = None
        self.silence_error: ProxyError | None = None  # set when LM Studio went silent mid-stream
        self._silence_cancel: asyncio.Task[None] | None = None
        self.last_sent = asyncio.get_running_loop().time()  # loop time of the last SSE write (heartbeats)
        self.lm_started = 0.0  # perf_counter() when LM Studio was first asked (load or predict)
        self.lm_finished = 0.0  # perf_counter() when LM Studio's part was over

    # -- the caller's side ---------------------------------------------------------------

    @property
    def thread_id(self) -> str:
        return self.spec.thread_id

    def elapsed(self) -> float:
        return time.monotonic() - self.spec.accepted_at

    def partial_length(self) -> int:
        return sum(len(p) for p in self.parts)

    def mode_now(self) -> str:
        return self.registry.cancel_result(self.elapsed())[0]

    async def request_cancel(self, reason: str) -> None:
        """Ask the pump to stop and tell LM Studio at once.

        The first reason wins, except that a cancel upgrades a disconnect: the seed's
        browser code closes its EventSource *before* it calls the cancel endpoint, and
        that cancel must still get its quick_edit/keep_partial result.
        """
        if self.outcome is not None:
            return
        if self.stop_reason is None:
            self.stop_elapsed = self.elapsed()
            self.stop_reason = reason
            self._stop_requested.set()
            if self._deadline is not None:
                loop = asyncio.get_running_loop()
                self._deadline.reschedule(loop.time() + self.registry.config.cancel.drain_timeout_seconds)
            if self.prediction is not None:
                await self.prediction.cancel()
        elif reason == "cancel" and self.stop_reason == "disconnect":
            self.stop_reason = "cancel"
        if self.stop_reason == "cancel" and self.cancel_body is None:
            self.cancel_mode, self.cancel_body = self.registry.cancel_result(self.stop_elapsed)

    async def cancel(self) -> dict[str, Any]:
        """The cancel endpoint: stop, wait until the store change is committed, return the body."""
        if self.outcome is not None or self.stop_reason == "shutdown":
            raise ResourceNotFound(NO_ACTIVE_STREAM)
        await self.request_cancel("cancel")
        async with asyncio.timeout(self.registry.config.cancel.drain_timeout_seconds + 5):
            await self.finished.wait()
        if self.outcome != "cancelled" or self.cancel_body is None:
            raise ResourceNotFound(NO_ACTIVE_STREAM)
        return self.cancel_body

    async def client_gone(self) -> None:
        """The SSE client disconnected before the end: stop LM Studio, keep the partial text."""
        await self.request_cancel("disconnect")

    # -- the pump ------------------------------------------------------------------------

    async def run(self, bridge: Bridge, store: Store) -> None:
        """The pump task: load, predict, drain, then record the outcome."""
        error: ProxyError | None = None
        usage = Usage()
        loop = asyncio.get_running_loop()
        self.lm_started = time.perf_counter()
        log.info("stream start thread=%s response=%s model=%s", self.thread_id, self.spec.response_id, self.spec.model)
        try:
            handle = bridge.loaded_handle(self.spec.model)
            if handle is None:
                self.sent.set()  # loading takes a while: the client sees its progress meanwhile
                handle = await self._until_stopped(bridge.load(self.spec.model, self._on_load_progress))
            if handle is not None and not self._stop_requested.is_set():
                self.prediction = await bridge.predict(handle, self.spec.messages, self.spec.prediction_config)
                self.sent.set()
                self.outbox.push(self._created_event())
                if self._stop_requested.is_set():
                    await self.prediction.cancel()
                usage = await self._drain(self.prediction, loop)
                if self.silence_error is not None:
                    error = self.silence_error
        except ProxyError as exc:
            error = exc
        except Exception as exc:  # a bug: still end the stream cleanly, and say so in the log
            log.exception("stream %s failed", self.spec.response_id)
            error = ProxyError(f"Internal error while streaming: {exc}")
        finally:
            self.sent.set()
            if self._silence_cancel is not None:
                await self._silence_cancel
            if self.prediction is not None and self.prediction.cancel_sent is False and error is not None:
                await self.prediction.cancel()
        self.lm_finished = time.perf_counter()
        self._finish(store, usage, error)

    async def _until_stopped(self, coro: Any) -> Any:
        """Await `coro` unless a stop is requested first (then abandon it and return None)."""
        work = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        return work.result() if not work.cancelled() else None

    async def _drain(self, prediction: Prediction, loop: asyncio.AbstractEventLoop) -> Usage:
        """Relay fragments until LM Studio's final result; the only place that iterates the SDK stream.

        Two clocks guard it. A watchdog notices a silent LM Studio (`fragment_timeout_seconds`)
        and *sends the cancel* first: cancelling the iteration itself would close the channel
        without telling LM Studio (the SDK's trap). The hard deadline exists only once a cancel
        has been sent, and bounds the drain to `drain_timeout_seconds`.
        """
        config = self.registry.config
        fragment_timeout = config.lmstudio.fragment_timeout_seconds
        self._last_checkpoint = loop.time()  # the first checkpoint comes a second in, not before the first delta
        watchdog = loop.call_at(loop.time() + fragment_timeout, self._on_silence, prediction, loop)
        try:
            async with asyncio.timeout(None) as deadline:
                self._deadline = deadline
                if self._stop_requested.is_set():
                    deadline.reschedule(loop.time() + config.cancel.drain_timeout_seconds)
                fed = loop.time()
                async for fragment in prediction.fragments():
                    if self._stop_requested.is_set() or self.silence_error is not None:
                        continue  # after the cancel: not part of the answer (the SDK drops them too)
                    now = loop.time()
                    if now - fed > 1.0:  # re-arm the watchdog about once a second, not per token
                        watchdog.cancel()
                        watchdog = loop.call_at(now + fragment_timeout, self._on_silence, prediction, loop)
                        fed = now
                    kind = fragment.kind
                    if kind == "content":
                        if self.first_token_at is None:
                            self.first_token_at = time.monotonic()
                        self.parts.append(fragment.content)
                        self.outbox.push_text("response.content_delta", "delta", fragment.content)
                    elif kind == "reasoning":
                        self.reasoning.append(fragment.content)
                        self.outbox.push_text("reasoning.content", "content", fragment.content)
                    elif kind == "reasoning_start":
                        self.outbox.push({"event": "reasoning.started", "thread_id": self.thread_id})
                    else:
                        self.outbox.push({"event": "reasoning.completed", "thread_id": self.thread_id})
                    if now - self._last_checkpoint >= CHECKPOINT_SECONDS and kind == "content":
                        self._checkpoint(now)
        except TimeoutError:
            log.warning(
                "LM Studio did not finish the stream %s within the drain timeout after cancel",
                self.spec.response_id,
            )
            await prediction.aclose()
            return Usage(output_tokens=prediction.generated_tokens, stop_reason="userStopped")
        finally:
            watchdog.cancel()
            self._deadline = None
        return prediction.usage()

    def _on_silence(self, prediction: Prediction, loop: asyncio.AbstractEventLoop) -> None:
        """LM Studio sent nothing for too long: fail the stream, but stop LM Studio first."""
        if self._stop_requested.is_set() or self.silence_error is not None:
            return
        timeout = self.registry.config.lmstudio.fragment_timeout_seconds
        self.silence_error = BackendUnavailable(
            f"LM Studio sent nothing for {timeout:g} s; the prediction was stopped."
        )
        if self._deadline is not None:
            self._deadline.reschedule(loop.time() + self.registry.config.cancel.drain_timeout_seconds)
        self._silence_cancel = loop.create_task(prediction.cancel())  # awaited by run()

    def _checkpoint(self, now: float) -> None:
        self._last_checkpoint = now
        text = "".join(self.parts)
        self.parts = [text]  # one string, not one per token, for what came before (~50 B a token less)
        self.registry.store.checkpoint(self.spec.response_id, self.thread_id, text)

    def _on_load_progress(self, progress: float) -> None:
        # The SDK reports 100% for a model that is already loaded: not news for the client.
        if progress < self._load_reported + 0.1 and progress < 1.0:
            return
        if progress >= 1.0 and self._load_reported < 0:
            return
        self._load_reported = progress
        self.outbox.push(
            {
                "event": "response.processing",
                "status": "processing",
                "thread_id": self.thread_id,
                "message": f"Loading model {self.spec.model} ({progress:.0%})",
            }
        )

    def _created_event(self) -> dict[str, Any]:
        s = self.spec
        return {
            "event": "response.created",
            "status": "in_progress",
            "thread_id": s.thread_id,
            "response_id": s.response_id,
            "user_message_id": s.message_ids[-1] if s.message_ids else None,
            "trace_id": s.trace_id,
            "output_mode": s.output_mode,
            "model": s.model,
        }

    # -- the outcome ---------------------------------------------------------------------

    def _finish(self, store: Store, usage: Usage, error: ProxyError | None) -> None:
        """Decide the outcome, commit it, then queue the terminal event. Runs without awaiting."""
        s = self.spec
        text = "".join(self.parts)
        duration = self.elapsed()
        event: dict[str, Any]
        if self.stop_reason is not None:
            self.outcome = "cancelled"
            if usage.stop_reason is None:
                usage = dataclasses.replace(usage, stop_reason="userStopped")
        elif error is not None:
            self.outcome = "failed"
        else:
            self.outcome = "completed"
        try:
            if self.outcome == "completed":
                event = self._record_completion(store, usage, duration, text)
            elif self.outcome == "cancelled":
                event = self._record_stop(store, usage, duration, text)
            else:
                assert error is not None
                event = self._record_failure(store, usage, duration, text, error)
        except Exception:  # the store failed: the client must still get a terminal event
            log.exception("recording the outcome of %s failed", s.response_id)
            self.outcome = "failed"
            error = InternalError("The proxy could not record the response.")
            self.final = {"status": "failed", "text": text, "usage": usage, "error": error}
            event = self._error_event(error)
        self.registry.finished(self, usage)
        self.outbox.push(event)
        self.outbox.push({"event": "[DONE]"})
        self.outbox.close()
        self.finished.set()
        log.info(
            "stream end thread=%s response=%s model=%s outcome=%s stop_reason=%s tokens=%d",
            s.thread_id, s.response_id, s.model, self.outcome, usage.stop_reason, usage.output_tokens,
        )  # fmt: skip

    def _record_completion(self, store: Store, usage: Usage, duration: float, text: str) -> dict[str, Any]:
        s = self.spec
        rendered, blocks = render(text, s.output_mode)
        mid = store.finish_response(
            s.response_id, status="completed", usage=usage, duration=duration, text=text,
            metadata={"model": s.model, "stop_reason": usage.stop_reason},
        )  # fmt: skip
        self.final = {
            "status": "completed", "text": text, "rendered": rendered, "blocks": blocks, "usage": usage,
            "message_id": mid,
        }  # fmt: skip
        event: dict[str, Any] = {
            "event": "response.completed", "status": "completed", "thread_id": s.thread_id,
            "response_id": s.response_id,
        }  # fmt: skip
        if s.output_mode in ("structured", "blocks"):
            event["response_blocks"] = blocks
        else:
            event["response"] = rendered
        event["reasoning_content"] = "".join(self.reasoning) or None
        event["usage"] = usage_json(usage)
        return event

    def _record_failure(
        self, store: Store, usage: Usage, duration: float, text: str, error: ProxyError
    ) -> dict[str, Any]:
        s = self.spec
        if not s.streaming and not self.parts and not self.reasoning:
            # Nothing was generated and the client gets an HTTP error (which v5 retries):
            # keep nothing of it but the failed usage row, so a retry duplicates nothing.
            store.finish_response(
                s.response_id, status="failed", usage=usage, duration=duration, text=None,
                error=error.message, delete_thread_if_empty=s.thread_created,
            )  # fmt: skip
        else:
            metadata = {
                "failed": True, "error": {"code": error.code, "message": error.message},
                "partial_content_length": len(text),
            }  # fmt: skip
            store.finish_response(
                s.response_id, status="failed", usage=usage, duration=duration, text=text, metadata=metadata,
                error=error.message,
            )  # fmt: skip
        self.final = {"status": "failed", "text": text, "usage": usage, "error": error}
        return self._error_event(error)

    def _error_event(self, error: ProxyError) -> dict[str, Any]:
        return {"event": "response.error", "status": "failed", "thread_id": self.thread_id,
                "message": error.message, "code": error.code}  # fmt: skip

    def _record_stop(self, store: Store, usage: Usage, duration: float, text: str) -> dict[str, Any]:
        s = self.spec
        quick_edit = self.stop_reason == "cancel" and self.cancel_mode == "quick_edit"
        meta: dict[str, Any] | None = None
        if not quick_edit:
            meta = {"cancelled": True, "partial_content_length": len(text)}
            if self.stop_reason == "cancel":
                meta["cancel_mode"] = "keep_partial"
            elif self.stop_reason == "disconnect":
                meta["cancel_reason"] = "client_disconnected"
            else:
                meta.update(cancel_reason="server_shutdown", interrupted=True)
        store.finish_response(
            s.response_id, status="cancelled", usage=usage, duration=duration,
            text=None if quick_edit else text,  # quick_edit: the messages go, as if never sent
            metadata=meta, cancel_mode=self.cancel_mode or self.stop_reason,
            delete_thread_if_empty=quick_edit and s.thread_created,
        )  # fmt: skip
        self.final = {"status": "cancelled", "text": text, "usage": usage}
        if self.stop_reason == "shutdown":
            return self._error_event(ShuttingDown("The proxy is shutting down."))
        return {
            "event": "response.cancelled",
            "status": "cancelled",
            "thread_id": s.thread_id,
            "partial_content_length": len(text),
            "cancel_mode": self.cancel_mode or self.stop_reason,
        }

    # -- the SSE side --------------------------------------------------------------------

    async def sse_body(self) -> Any:
        """The SSE byte chunks for this stream (`EventSource` stops the prediction if the client goes away)."""
        metrics = self.registry.metrics
        loop = asyncio.get_running_loop()
        last_write = 0.0
        while True:
            batch = await self.outbox.take()
            if not batch:
                return
            since = loop.time() - last_write  # since the last write of text (the first never waits)
            interval = self.registry.write_interval
            if since < interval and batch[-1]["event"] != "[DONE]":
                # Tokens are arriving faster than one write per interval: let a few more
                # gather so they share one socket write (real LM Studio speeds never wait here).
                await asyncio.sleep(interval - since)
                batch = Outbox.merge(batch, self.outbox.take_nowait())
            if batch[0]["event"] in TEXT_EVENTS:
                last_write = loop.time()
            if metrics is not None:
                metrics.relay.observe(time.perf_counter() - self.outbox.pending_since)
            self.last_sent = loop.time()
            done = batch[-1]["event"] == "[DONE]"
            if done:
                batch.pop()
            chunk = sse.frames(batch)
            yield chunk + sse.DONE if done else chunk
            if done:
                return


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "stop_reason": usage.stop_reason,
        "time_to_first_token_seconds": usage.time_to_first_token,
        "tokens_per_second": usage.tokens_per_second,
    }


@dataclass
class _Ended:
    """A stream stopped by a cancel or a disconnect, remembered for later cancels."""

    owner: str
    response_id: str
    thread_created: bool
    stop_elapsed: float
    body: dict[str, Any] | None
    expires: float


class StreamRegistry:
    """The running streams by thread, plus recent cancel answers (cancel is idempotent)."""

    REMEMBER_CANCELS_SECONDS = 600.0

    def __init__(self, config: Config, store: Store, bridge: Bridge, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.store = store
        self.bridge = bridge
        self.streams: dict[str, ActiveStream] = {}
        self._ended: dict[str, _Ended] = {}
        self.accepting = True
        self._ticker: asyncio.Task[None] | None = None

    @property
    def write_interval(self) -> float:
        """Seconds between two SSE writes of one stream's text, scaled by the number of streams."""
        return min(MAX_WRITE_INTERVAL, max(WRITE_INTERVAL, len(self.streams) / WRITES_PER_SECOND))

    def check_free(self, thread_id: str) -> None:
        if thread_id in self.streams:
            raise StreamAlreadyActive("A response is already streaming on this thread.", {"thread_id": thread_id})

    def start(self, spec: StreamSpec) -> ActiveStream:
        """Register and start a stream; call in the same step as `check_free` (no await between)."""
        self.check_free(spec.thread_id)
        stream = ActiveStream(spec, self)
        self.streams[spec.thread_id] = stream
        self._ended.pop(spec.thread_id, None)
        loop = asyncio.get_running_loop()
        stream.task = loop.create_task(stream.run(self.bridge, self.store), name=f"pump-{spec.response_id}")
        if self._ticker is None or self._ticker.done():
            self._ticker = loop.create_task(self._heartbeats(), name="heartbeats")
        return stream

    async def _heartbeats(self) -> None:
        """One timer for all streams: a `response.heartbeat` after `heartbeat_seconds` of silence.

        (A timeout around every wait for the next event cost more than this, per token.)
        Runs while there are streams; `start()` brings it back.
        """
        interval = self.config.streaming.heartbeat_seconds
        loop = asyncio.get_running_loop()
        while self.streams:
            await asyncio.sleep(min(interval / 4, 1.0))
            now = loop.time()
            for stream in list(self.streams.values()):
                if stream.spec.streaming and not stream.outbox.closed and now - stream.last_sent >= interval:
                    stream.last_sent = now
                    stream.outbox.push({"event": "response.heartbeat", "thread_id": stream.thread_id})

    def finished(self, stream: ActiveStream, usage: Usage) -> None:
        if self.streams.get(stream.thread_id) is stream:
            del self.streams[stream.thread_id]
        if self.metrics is not None:
            m = self.metrics
            m.streams.labels(stream.outcome or "unknown").inc()
            m.tokens.inc(usage.output_tokens)
            if stream.first_token_at is not None:
                m.ttft.observe(stream.first_token_at - stream.spec.accepted_at)
            if stream.outcome == "cancelled" and stream.stop_reason == "cancel" and stream.cancel_mode:
                m.cancels.labels(stream.cancel_mode).inc()
            elif stream.outcome == "cancelled" and stream.stop_reason == "disconnect":
                m.disconnects.inc()
        if stream.outcome == "cancelled" and stream.stop_reason in ("cancel", "disconnect"):
            self._ended[stream.thread_id] = _Ended(
                stream.spec.owner,
                stream.spec.response_id,
                stream.spec.thread_created,
                stream.stop_elapsed,
                stream.cancel_body,
                time.monotonic() + self.REMEMBER_CANCELS_SECONDS,
            )

    def cancel_result(self, elapsed: float) -> tuple[str, dict[str, Any]]:
        """The cancel mode for a stop `elapsed` seconds after acceptance, and the endpoint's body."""
        quick = elapsed < self.config.cancel.quick_edit_seconds
        body = {
            "success": True,
            "cancel_mode": "quick_edit" if quick else "keep_partial",
            "elapsed_seconds": round(elapsed, 3),
            "user_message_deleted": quick,
            "assistant_response_deleted": quick,
            "partial_content_saved": not quick,
        }
        return str(body["cancel_mode"]), body

    async def cancel(self, thread_id: str, owner: str) -> dict[str, Any]:
        stream = self.streams.get(thread_id)
        if stream is not None:
            if stream.spec.owner != owner:
                raise InsufficientPermissions("You don't have permission to cancel this stream")
            return await stream.cancel()
        ended = self._ended.get(thread_id)
        if ended is None or ended.expires < time.monotonic():
            raise ResourceNotFound(NO_ACTIVE_STREAM)
        if ended.owner != owner:
            raise InsufficientPermissions("You don't have permission to cancel this stream")
        if ended.body is None:
            # The client disconnected first (as the seed's Stop button does), then cancelled.
            mode, body = self.cancel_result(ended.stop_elapsed)
            self.store.apply_late_cancel(ended.response_id, mode, delete_thread_if_empty=ended.thread_created)
            ended.body = body
            if self.metrics is not None:
                self.metrics.cancels.labels(mode).inc()
        return ended.body

    def for_owner(self, owner: str) -> list[ActiveStream]:
        return [s for s in self.streams.values() if s.spec.owner == owner]

    async def shutdown(self) -> None:
        """Stop accepting, stop every running prediction, and wait for the pumps to record it."""
        self.accepting = False
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        streams = list(self.streams.values())
        await asyncio.gather(*(s.request_cancel("shutdown") for s in streams), return_exceptions=True)
        tasks = [s.task for s in streams if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.config.cancel.drain_timeout_seconds + 1)
