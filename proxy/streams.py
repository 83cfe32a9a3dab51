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
- A stop during a model round settles the outcome at once (`_settle_at_stop`): fragments
  after the stop are dropped, so the answer is already fixed, and the cancel need not wait
  for LM Studio's final packet (under load it queues behind every other stream's tokens).
  The drain goes on in the pump, and LM Studio's counts are written to the usage row when
  they come. A stop while an MCP tool runs waits for the tool (the seed's rule).
- The linearisation point is the first of: a stop request during the drain, or the pump's
  decision after it. If a stop was requested by then, the outcome is that stop (even if LM
  Studio happened to finish); otherwise the outcome is `completed` and later cancels get
  404. Both run on the one event loop, so there is no window in between.
- The store change of an outcome is committed before its terminal SSE event is queued and
  before the cancel endpoint answers.
- The request's own rows (thread, input messages, the `in_progress` response) are committed
  by the pump right after LM Studio was sent the prediction (`store_rows`), so the commit
  overlaps LM Studio's work instead of delaying the first token; the registry holds the
  thread from acceptance on, and the handler starts the HTTP response only after the commit.
  If that commit fails, the prediction is cancelled and the client gets the HTTP error, with
  nothing stored.
- Fragments go to the client through an `Outbox`, not a bounded queue that would block
  the pump: deltas that wait coalesce into one, so a slow reader costs memory bounded by
  the answer itself while LM Studio is still drained at full speed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from proxy import history, mcp_client, outcomes
from proxy.bridge import Bridge, Prediction, ToolCall
from proxy.config import Config
from proxy.errors import BackendUnavailable, InternalError, ProxyError, ResourceNotFound, StorageUnavailable
from proxy.flag import Flag
from proxy.metrics import Metrics
from proxy.outbox import Outbox
from proxy.spec import StreamSpec
from proxy.store import Checkpoint, Store, Usage
from proxy.wire.bodies import CancelMode, CancelStreamResponse
from proxy.wire.bodies import ToolCall as ToolCallJson
from proxy.wire.events import ResponseCreatedEvent, StreamEvent, ToolCallBlock, ToolResultBlock

log = logging.getLogger("proxy.streams")

# A running answer is saved about this often (`checkpoint_due`): the registry's one timer saves
# the streams that are due, several to a transaction (`StreamRegistry.save_running`).
CHECKPOINT_SECONDS = 1.0
CANCEL_GRACE_SECONDS = 5.0  # how much longer than the drain a cancel waits for the outcome
NO_ACTIVE_STREAM = "No active stream found for this thread"
NOT_YOUR_STREAM = "You don't have permission to cancel this stream"
STORE_FAILED = "The proxy could not store the request."


class Host(Protocol):
    """What a stream needs of the registry that runs it (`registry.StreamRegistry`)."""

    config: Config
    store: Store
    metrics: Metrics

    @property
    def write_interval(self) -> float: ...

    def cancel_result(self, elapsed: float, *, tools_ran: bool = False) -> tuple[CancelMode, CancelStreamResponse]: ...

    def finished(self, stream: ActiveStream, usage: Usage) -> None: ...


class ActiveStream:
    """One running prediction: its pump task, its partial text, and how it ended."""

    def __init__(self, spec: StreamSpec, registry: Host) -> None:
        self.spec = spec
        self.registry = registry
        self.outbox = Outbox()
        if spec.streaming:  # the first event; it goes out with whatever else is ready by then
            self.outbox.push(
                {"event": "response.processing", "status": "processing", "thread_id": spec.thread_id,
                 "message": "Request accepted"}
            )  # fmt: skip
        self.parts: list[str] = []
        self.tool_calls: list[ToolCallJson] = []  # calls the model made in this round
        self.answered_calls: set[str] = set()  # calls of the last round the proxy has answered
        self.tools_started = 0  # MCP calls started: a quick_edit cannot take those back
        self.running_tool: str | None = None
        self.rounds = 1
        self.reasoning: list[str] = []
        self.stop_reason: str | None = None  # why a stop was requested: cancel|disconnect|shutdown
        self.stop_elapsed = 0.0  # seconds from acceptance to the stop request
        self.cancel_mode: CancelMode | None = None
        self.cancel_body: CancelStreamResponse | None = None
        self.outcome: str | None = None  # completed|cancelled|failed once decided
        self.final: outcomes.Final | None = None  # what it produced, once finished
        self.finished = Flag()
        # Set once LM Studio has been sent the prediction (or a model load began, or the pump
        # stopped): the handler sets up the HTTP response only then, so that work overlaps
        # LM Studio's instead of delaying the request to it.
        self.sent = Flag()
        self.prediction: Prediction | None = None
        # LM Studio has answered (a first fragment or load progress), or the pump has ended: the
        # SSE response waits a moment for this before it sends its headers, so a dead connection
        # to LM Studio is still an HTTP 503 (see `relay.EventStream`).
        self.answered = Flag()
        self.committed = False  # the SSE response has started (its headers are sent)
        # Set by the SSE response while it waits for LM Studio's first answer: the pump calls it
        # right after it has that answer in the outbox, so the headers and the first token leave
        # in the pump's own step (`relay.EventStream`).
        self.opener: Callable[[], Awaitable[None]] | None = None
        self.http_answer = not spec.streaming  # the outcome is answered as HTTP (decided in _finish)
        self.task: asyncio.Task[None] | None = None
        self._stop_requested = Flag()
        self._deadline: asyncio.Timeout | None = None
        self._draining = False  # the pump is inside `_drain` (a stop then settles the outcome at once)
        self._last_checkpoint = 0.0
        self._unsaved = False  # text arrived since the last checkpoint
        self._load_reported = -1.0
        self.first_token_at: float | None = None
        self.silence_error: ProxyError | None = None  # set when LM Studio went silent mid-stream
        self._silence_cancel: asyncio.Task[None] | None = None
        self.last_sent = asyncio.get_running_loop().time()  # loop time of the last SSE write (heartbeats)
        self.lm_started = 0.0  # perf_counter() when LM Studio was first asked (load or predict)
        self.lm_finished = 0.0  # perf_counter() when LM Studio's part was over
        self.first_answer_at = 0.0  # perf_counter() of LM Studio's first answer (or of the end, if none came)
        self.unstored = False  # storing the request's rows failed: the outcome stores nothing

    # -- the caller's side ---------------------------------------------------------------

    @property
    def thread_id(self) -> str:
        return self.spec.thread_id

    def elapsed(self) -> float:
        return time.monotonic() - self.spec.accepted_at

    def overhead_ms(self, request_started: float, lm_done: float) -> str:
        """The `X-Proxy-Overhead-Ms` header: the proxy's time outside LM Studio on the way to now,
        from the request's start until LM Studio was asked (less what it waited on LM Studio
        meanwhile: `StreamSpec.lm_waited`), and from `lm_done` (its first answer, for a stream's
        headers; its end, for a JSON answer) until now."""
        before = self.lm_started - request_started - self.spec.lm_waited
        seconds = before + (time.perf_counter() - lm_done if lm_done else 0.0)
        return f"{seconds * 1000:.2f}"

    def partial_length(self) -> int:
        return sum(len(p) for p in self.parts)

    def mode_now(self) -> CancelMode:
        return self.registry.cancel_result(self.elapsed(), tools_ran=self.tools_started > 0)[0]

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
            self.cancel_mode, self.cancel_body = self.registry.cancel_result(
                self.stop_elapsed, tools_ran=self.tools_started > 0
            )
        self._settle_at_stop()

    def _settle_at_stop(self) -> None:
        """A stop during a model round fixes the answer at once (fragments after it are dropped),
        so the outcome is recorded now, and the cancel answered, without waiting for LM Studio's
        final packet: when the proxy is busy, that packet queues behind every other stream's
        tokens on the one connection. The pump still drains to it (`drain_timeout_seconds`) and
        then writes LM Studio's own counts into the usage row (`_record_usage`)."""
        prediction = self.prediction
        if self.outcome is not None or not self._draining or prediction is None or self.running_tool is not None:
            return
        self.lm_finished = time.perf_counter()
        counted = Usage(output_tokens=prediction.generated_tokens, stop_reason="userStopped")
        self._finish(self.registry.store, counted, None)

    async def cancel(self) -> CancelStreamResponse:
        """The cancel endpoint: stop, wait until the store change is committed, return the body."""
        if self.outcome is not None or self.stop_reason == "shutdown":
            raise ResourceNotFound(NO_ACTIVE_STREAM)
        await self.request_cancel("cancel")
        config = self.registry.config
        # A running tool finishes first (the seed's rule), within its own timeout.
        tool_time = config.tools.call_timeout_seconds if self.running_tool is not None else 0.0
        async with asyncio.timeout(config.cancel.drain_timeout_seconds + tool_time + CANCEL_GRACE_SECONDS):
            await self.finished.wait()
        if self.outcome != "cancelled" or self.cancel_body is None:
            raise ResourceNotFound(NO_ACTIVE_STREAM)
        return self.cancel_body

    async def client_gone(self) -> None:
        """The SSE client disconnected before the end: stop LM Studio, keep the partial text."""
        await self.request_cancel("disconnect")

    def store_rows(self, store: Store) -> None:
        """Store the request's rows (`spec.rows`), once: right after LM Studio was sent the
        prediction, before a model load begins, or at the end if neither happened."""
        rows = self.spec.rows
        if rows is None:
            return
        self.spec.rows = None
        try:
            store.store_response(rows)
        except BaseException:
            self.unstored = True
            raise

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
                await bridge.client()  # LM Studio unreachable: an HTTP 503, before any SSE is sent
                self.store_rows(store)
                self.sent.set()  # loading takes a while: the client sees its progress meanwhile
                handle = await self._until_stopped(bridge.load(self.spec.model, self._on_load_progress))
            if handle is not None and not self._stop_requested.is_set():
                usage = await self._rounds(bridge, handle, store, loop)
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
        if self.outcome is not None:  # settled when the stop came: LM Studio's counts are what is left
            self._record_usage(store, usage)
            return
        self.lm_finished = time.perf_counter()
        self._finish(store, usage, error)

    def _record_usage(self, store: Store, usage: Usage) -> None:
        if usage.stop_reason is None:
            usage = dataclasses.replace(usage, stop_reason="userStopped")
        try:
            store.update_usage(self.spec.response_id, usage)
        except StorageUnavailable as exc:  # the counted usage stays; LM Studio's is lost
            log.error("the final usage of %s is not saved: %s", self.spec.response_id, exc.message)

    async def _rounds(self, bridge: Bridge, handle: Any, store: Store, loop: asyncio.AbstractEventLoop) -> Usage:
        """Model rounds: one, unless the model calls tools the proxy runs (MCP). Then the proxy
        runs them and starts the next round with their results, up to `tools.max_rounds`.

        A stop during a model round is today's cancel and drain. A stop while a tool runs lets
        that tool finish (within its timeout) and keeps its result; no further tool and no
        further round starts, so nothing reaches LM Studio after the stop.
        """
        s = self.spec
        messages = s.messages
        total: Usage | None = None
        sessions: mcp_client.Sessions | None = None
        limits = self.registry.config.tools
        try:
            for round_number in range(1, limits.max_rounds + 1):
                self.prediction = await bridge.predict(handle, messages, s.prediction_config)
                if s.rows is not None:
                    await self._store_rows_after_send(self.prediction, store)
                self.sent.set()
                if round_number == 1:
                    self.outbox.push(self._created_event())
                if self._stop_requested.is_set():
                    await self.prediction.cancel()
                usage = await self._drain(self.prediction, loop)
                total = usage if total is None else _add(total, usage)
                calls = [c for c in self.tool_calls if c["tool_name"] not in s.function_tools]
                if self._stop_requested.is_set() or self.silence_error is not None or not calls:
                    return total
                self.prediction = None  # over: a stop from here on has nothing to cancel in LM Studio
                last = round_number == limits.max_rounds
                if sessions is None:
                    sessions = mcp_client.Sessions(limits.mcp_connect_timeout_seconds)
                results = await self._run_tools(calls, sessions, store, last)
                if last or len(calls) < len(self.tool_calls) or self._stop_requested.is_set():
                    # The client has calls of its own to run, or nothing more may start.
                    self.answered_calls = set(results)
                    if last:
                        total = dataclasses.replace(total, stop_reason="maxToolRounds")
                    return total
                text = "".join(self.parts)
                store.end_round(s.response_id, s.thread_id, text, {"model": s.model, "tool_calls": self.tool_calls})
                messages = history.next_round(messages, text, [dict(c) for c in self.tool_calls], results)
                self.parts, self.tool_calls, self.rounds = [], [], round_number + 1
            return total or Usage()
        finally:
            if sessions is not None:
                await sessions.aclose()

    async def _store_rows_after_send(self, prediction: Prediction, store: Store) -> None:
        """Store the rows while LM Studio starts on the prediction; if that fails, stop it."""
        try:
            self.store_rows(store)
        except BaseException:
            await prediction.cancel()
            await prediction.aclose()
            raise

    async def _run_tools(
        self, calls: list[ToolCallJson], sessions: mcp_client.Sessions, store: Store, last: bool
    ) -> dict[str, str]:
        """Run the proxy's calls of a round in order; each result is stored and streamed at once.
        Returns {call id: result text} for the calls that have a result."""
        results: dict[str, str] = {}
        timeout = self.registry.config.tools.call_timeout_seconds
        for call in calls:
            if self._stop_requested.is_set():
                break  # the seed's rule: the running tool completes, no further tool starts
            tool = self.spec.mcp_tools.get(call["tool_name"])
            if tool is None:
                offered = ", ".join(sorted([*self.spec.function_tools, *self.spec.mcp_tools])) or "none"
                result = mcp_client.ToolResult(
                    f"There is no tool named '{call['tool_name']}'. The tools are: {offered}.", is_error=True
                )
            elif last:
                result = mcp_client.ToolResult(
                    f"Not run: the response reached its limit of {self.registry.config.tools.max_rounds} model "
                    "rounds (tools.max_rounds).", is_error=True,
                )  # fmt: skip
            else:
                call["server_label"] = tool.server.label
                self.tools_started += 1
                self._checkpoint(asyncio.get_running_loop().time())  # a crash now: "result not recorded"
                self.running_tool = tool.name
                try:
                    result = await sessions.call(tool, call["tool_arguments"], timeout)
                finally:
                    self.running_tool = None
            results[call["id"]] = result.text
            self._tool_result(store, call, result)
        return results

    def _tool_result(self, store: Store, call: ToolCallJson, result: mcp_client.ToolResult) -> None:
        block: ToolResultBlock = {
            "type": "tool_result", "id": call["id"], "tool_name": call["tool_name"], "tool_result": result.text,
            "is_error": result.is_error,
        }  # fmt: skip
        meta: dict[str, Any] = {"tool_call_id": call["id"], "tool_name": call["tool_name"], "is_error": result.is_error}
        if "server_label" in call:
            block["server_label"] = meta["server_label"] = call["server_label"]
        try:
            store.add_tool_result(self.spec.response_id, self.thread_id, result.text, meta)
        except StorageUnavailable as exc:  # the model still gets the result; the client sees it in the stream
            log.error("the result of tool call %s is not saved: %s", call["id"], exc.message)
        self.outbox.push({"event": "response.block", "thread_id": self.thread_id, "block": block})

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
        self._draining = True
        try:
            async with asyncio.timeout(None) as deadline:
                self._deadline = deadline
                if self._stop_requested.is_set():
                    deadline.reschedule(loop.time() + config.cancel.drain_timeout_seconds)
                fed = loop.time()
                answered = False
                opener = None
                async for fragment in prediction.fragments():
                    if self._stop_requested.is_set() or self.silence_error is not None:
                        continue  # after the cancel: not part of the answer (the SDK drops them too)
                    now = loop.time()
                    if now - fed > 1.0:  # re-arm the watchdog about once a second, not per token
                        watchdog.cancel()
                        watchdog = loop.call_at(now + fragment_timeout, self._on_silence, prediction, loop)
                        fed = now
                    kind = fragment.kind
                    if not answered:
                        answered = True
                        self._note_answer()
                        opener, self.opener = self.opener, None
                    if kind == "content":
                        if self.first_token_at is None:
                            self.first_token_at = time.monotonic()
                        self.parts.append(fragment.content)
                        self._unsaved = True
                        self.outbox.push_text("response.content_delta", "delta", fragment.content)
                    elif kind == "reasoning":
                        self.reasoning.append(fragment.content)
                        self.outbox.push_text("reasoning.content", "content", fragment.content)
                    elif kind == "tool_call" and fragment.call is not None:
                        self._tool_call(fragment.call)
                    elif kind == "reasoning_start":
                        self.outbox.push({"event": "reasoning.started", "thread_id": self.thread_id})
                    else:
                        self.outbox.push({"event": "reasoning.completed", "thread_id": self.thread_id})
                    if opener is not None:  # the first answer: out with the headers, from here
                        await opener()
                        opener = None
        except TimeoutError:
            log.warning(
                "LM Studio did not finish the stream %s within the drain timeout after cancel",
                self.spec.response_id,
            )
            await prediction.aclose()
            return Usage(output_tokens=prediction.generated_tokens, stop_reason="userStopped")
        finally:
            self._draining = False
            watchdog.cancel()
            self._deadline = None
        return prediction.usage()

    def _tool_call(self, call: ToolCall) -> None:
        entry: ToolCallJson = {"id": call.id, "tool_name": call.name, "tool_arguments": call.arguments}
        self.tool_calls.append(entry)
        block: ToolCallBlock = {"type": "tool_call", **entry}
        tool = self.spec.mcp_tools.get(call.name)
        if tool is not None:
            block["server_label"] = tool.server.label
        self.outbox.push({"event": "response.block", "thread_id": self.thread_id, "block": block})
        self._checkpoint(asyncio.get_running_loop().time())  # a call is rare and worth keeping at once

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

    def checkpoint_due(self, now: float) -> bool:
        """New text to save, CHECKPOINT_SECONDS after the last save (or the round's start), while
        LM Studio generates it: not after a stop, whose outcome is already recorded."""
        return (
            self._unsaved
            and self._draining
            and now - self._last_checkpoint >= CHECKPOINT_SECONDS
            and self.outcome is None
            and not self._stop_requested.is_set()
            and self.silence_error is None
        )

    def checkpoint_row(self, now: float) -> Checkpoint:
        """What to save now (the caller saves it); the text so far becomes one string."""
        self._last_checkpoint = now
        self._unsaved = False
        text = "".join(self.parts)
        self.parts = [text]  # one string, not one per token, for what came before (~50 B a token less)
        return Checkpoint(self.spec.response_id, self.thread_id, text, [dict(c) for c in self.tool_calls])

    def _checkpoint(self, now: float) -> None:
        """Save at once (a tool call, a tool about to run), not at the registry's next tick."""
        self.registry.store.checkpoints([self.checkpoint_row(now)])

    def _note_answer(self) -> None:
        if not self.answered.is_set():
            self.first_answer_at = time.perf_counter()
            self.answered.set()

    def _on_load_progress(self, progress: float) -> None:
        # The SDK reports 100% for a model that is already loaded: not news for the client.
        if progress < self._load_reported + 0.1 and progress < 1.0:
            return
        if progress >= 1.0 and self._load_reported < 0:
            return
        self._load_reported = progress
        self._note_answer()
        self.outbox.push(
            {
                "event": "response.processing",
                "status": "processing",
                "thread_id": self.thread_id,
                "message": f"Loading model {self.spec.model} ({progress:.0%})",
            }
        )

    def _created_event(self) -> ResponseCreatedEvent:
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
        """Decide and commit the outcome, then queue the terminal event. Runs without awaiting."""
        s = self.spec
        if s.rows is not None:  # ended before LM Studio was sent anything (a failed attempt set None)
            try:
                self.store_rows(store)
            except Exception as exc:
                error = error or (exc if isinstance(exc, ProxyError) else InternalError(STORE_FAILED))
                log.error("the request of %s is not stored: %s", s.response_id, exc)
        # Failed before the response committed to SSE: the client gets an HTTP error instead,
        # so the outcome keeps nothing a retry would repeat.
        self.http_answer = not s.streaming or not self.committed
        if self.unstored:  # nothing of the request is stored, and nothing of its outcome will be
            error = error or InternalError(STORE_FAILED)
            self.outcome, self.final = "failed", outcomes.Final("failed", "", usage, error=error)
            event: StreamEvent = outcomes.error_event(s.thread_id, error)
        else:
            ended = outcomes.Ended(
                s, "".join(self.parts), "".join(self.reasoning), self.stop_reason, self.cancel_mode, self.elapsed(),
                usage, error, self.http_answer, self.tool_calls, frozenset(self.answered_calls),
            )  # fmt: skip
            self.outcome, self.final, event = outcomes.record(store, ended)
        self.registry.finished(self, self.final.usage)
        self.outbox.push(event)
        self.outbox.close()
        self.finished.set()
        self._note_answer()
        log.info(
            "stream end thread=%s response=%s model=%s outcome=%s stop_reason=%s tokens=%d",
            s.thread_id, s.response_id, s.model, self.outcome, self.final.usage.stop_reason,
            self.final.usage.output_tokens,
        )  # fmt: skip


def _add(before: Usage, after: Usage) -> Usage:
    """The usage of two model rounds of one response: tokens add up, the last round's end counts."""
    return dataclasses.replace(
        after,
        input_tokens=before.input_tokens + after.input_tokens,
        output_tokens=before.output_tokens + after.output_tokens,
        time_to_first_token=before.time_to_first_token,
    )
