"""The `predict` channel: JIT load, prompt processing, token streaming, and cancellation.

Cancel semantics (what LM Studio does, and what the proxy relies on) — do not "fix"
these without reading why:

- A `{"type": "cancel"}` on the channel may arrive at any moment: right after
  channelCreate, while the model loads, during prompt processing, mid-stream, or twice.
  The session's receive loop hands it to `receive()` the moment it is read, which sets
  the cancel event synchronously. The generator checks that event before producing each
  token and waits on it (never a bare sleep) between tokens, so no token is produced
  after a cancel arrives (`tokens_after_cancel == 0`). The channel then ends normally:
  one `success` with stopReason `userStopped` and the counts so far, then
  `channelClose`. Later cancels are ignored.
- Without a cancel the prediction runs to its end even if the client stopped reading:
  breaking out of the SDK's loop sends nothing, and LM Studio keeps generating while the
  socket lives. The simulator does the same; that is the trap the proxy must avoid.
- If the websocket goes away mid-prediction there is nobody to talk to: generation stops
  and the record is `failed` with error "connection closed" — never `cancelled`, so
  tests can tell a real cancel from a dropped connection.
- Faults: `ignore_cancel` records the cancel but keeps generating to the natural end
  (then `tokens_after_cancel` > 0 shows it); `stall` waits for a cancel (or forever);
  `fail_after_tokens` ends with channelError; `drop_after_tokens` closes the socket;
  `stall_in_tool_call` holds a tool call after its name until a cancel arrives (then
  `userStopped`, and no `toolCallGenerationEnd`).
- What is answered (text, reasoning, tool calls, structured JSON) is decided in answer.py;
  this module only streams it, so the per-token path is the same for every kind of answer.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from proxy.simulator import answer, protocol, textgen, tools
from proxy.simulator.catalogue import Instance
from proxy.simulator.channel import Channel, Connection, ConnectionGone
from proxy.simulator.clock import pause
from proxy.simulator.loading import load_model
from proxy.simulator.records import PredictionRecord, Status
from proxy.simulator.request import PredictRequest, max_tokens, stop_strings
from proxy.simulator.state import SimState

PROMPT_STEPS = 4


def _held_suffix(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string."""
    best = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:n]):
                best = n
                break
    return best


class PredictionChannel(Channel):
    """One `predict` channel and its record."""

    def __init__(self, conn: Connection, channel_id: int, state: SimState, params: Any) -> None:
        super().__init__(conn, channel_id, state)
        request = PredictRequest.parse(params)
        self._request = request
        self._query = request.query
        self._instance = state.catalogue.instance(request.query, "llm")
        spec = self._instance.spec if self._instance is not None else state.catalogue.resolve(request.query, "llm")
        self._spec = spec
        self._model = spec.key if spec is not None else None
        self._cancel = asyncio.Event()
        self.record: PredictionRecord = state.new_record(self._model or request.query, request.history, request.config)
        with state.changing():
            self.record.tools = [t["name"] for t in request.tools]
            self.record.structured = request.structured
            self.record.images = request.images
            self.record.preset = request.preset
            self.record.draft_model = request.draft_model
        self._prompt_tokens = sum(textgen.count_tokens(m["text"]) + 4 for m in request.history)
        self._started = time.monotonic()
        self._first_token_at: float | None = None
        self._generating_since: float | None = None

    def receive(self, message: Any) -> None:
        """A client message on the channel; only `cancel` exists. Runs on the receive loop."""
        if not (isinstance(message, dict) and message.get("type") == "cancel"):
            return
        with self.state.changing():
            record = self.record
            if record.cancel_received_at is not None or record.status != "running":
                return  # duplicate cancel, or the prediction already ended
            record.cancel_received_at = time.time()
            record.tokens_at_cancel = record.tokens_generated
        if not self.state.faults_for(self._model).ignore_cancel:
            self._cancel.set()

    async def run(self) -> None:
        try:
            await self._run()
        except ConnectionGone:
            self._finish("failed", error="connection closed")
        except asyncio.CancelledError:
            self._finish("failed", error="connection closed")
            raise
        except Exception as exc:  # a simulator bug: report it on the channel, keep the socket
            self._finish("failed", error=f"simulator error: {exc!r}")
            await self.fail(protocol.server_error(f"Simulator error: {exc!r}"))

    def _finish(self, status: Status, *, stop_reason: str | None = None, error: str | None = None) -> None:
        with self.state.changing():
            record = self.record
            if record.status != "running":
                return
            record.status = status
            record.stop_reason = stop_reason
            record.error = error
            record.finished_at = time.time()

    async def _run(self) -> None:
        model = self._model
        catalogue = self.state.catalogue
        if model is None:
            loaded = [i.identifier for i in catalogue.instances("llm")]
            self._finish("failed", error="model not found")
            await self.fail(protocol.model_not_found(self._query, loaded))
            return
        assert self._spec is not None
        refusal = answer.refusal(self._request, self._spec, catalogue)
        if refusal is not None:
            self._finish("failed", error=refusal["title"])
            await self.fail(refusal)
            return
        # JIT load: the predict channel has no load packets, so the load is silent.
        if self._instance is None or self._instance.identifier not in {i.identifier for i in catalogue.instances()}:
            self._instance = catalogue.instance(model, "llm") or await load_model(
                self.state, model, self._cancel, reuse=True
            )
            if self._instance is None:
                await self._succeed("userStopped")
                return
        with self.state.changing():
            catalogue.touch(self._instance)  # a prediction restarts the instance's idle TTL
        faults = self.state.faults_for(model)
        if faults.stall:
            if faults.ignore_cancel:
                await asyncio.Event().wait()  # until the socket closes (task cancelled)
            await self._cancel.wait()
            await self._succeed("userStopped")
            return
        step = self.state.settings_for(model).prompt_seconds / PROMPT_STEPS
        for i in range(PROMPT_STEPS + 1):
            if self._cancel.is_set() or (i and await pause(step, self._cancel)):
                await self._succeed("userStopped")
                return
            await self.send(self._prompt_progress(i / PROMPT_STEPS))
        await self._generate(model)

    def _prompt_progress(self, progress: float) -> dict[str, Any]:
        """A promptProcessingProgress packet; `details` is required by lmstudio-js 2.x."""
        total = self._prompt_tokens
        done = round(total * progress)
        details = {
            "cachedTokenCount": 0,
            "totalPromptTokenCount": total,
            "processedPromptTokenCount": done,
            "unprocessedPromptTokenCount": total - done,
        }
        return {"type": "promptProcessingProgress", "progress": progress, "details": details}

    async def _generate(self, model: str) -> None:
        assert self._spec is not None
        limit = max_tokens(self._request.config)
        stops = stop_strings(self._request.config)
        planned = answer.plan(self._request, self._spec, self.record.id)
        pending, pending_tokens = "", 0  # answer text held back while it may start a stop string
        generated = 0
        self._generating_since = time.monotonic()
        for text, reasoning_type in planned.tokens:
            tps = self.state.settings_for(model).tokens_per_second
            if await pause(1 / tps if tps > 0 else 0, self._cancel):
                await self._succeed("userStopped")
                return
            if limit is not None and generated >= limit:
                await self._flush(pending, pending_tokens)
                await self._succeed("maxPredictedTokensReached")
                return
            faults = self.state.faults_for(model)
            if faults.fail_after_tokens is not None and generated >= faults.fail_after_tokens:
                self._finish("failed", error="injected failure")
                await self.fail(protocol.server_error(f"Simulated failure after {generated} tokens"))
                return
            if faults.drop_after_tokens is not None and generated >= faults.drop_after_tokens:
                self._finish("failed", error="injected connection drop")
                await self.conn.drop()
                return
            generated += 1
            with self.state.changing():
                self.record.tokens_generated = generated
            if self._first_token_at is None:
                self._first_token_at = time.monotonic()
            if reasoning_type != "none" or not stops:
                await self._fragment(text, 1, reasoning_type)
                continue
            pending += text
            pending_tokens += 1
            hits = [i for i in (pending.find(s) for s in stops) if i >= 0]
            if hits:
                await self._flush(pending[: min(hits)], pending_tokens)
                await self._succeed("stopStringFound")
                return
            keep = _held_suffix(pending, stops)
            if keep < len(pending):
                await self._fragment(pending[: len(pending) - keep], pending_tokens, "none")
                pending, pending_tokens = pending[len(pending) - keep :], 0
        await self._flush(pending, pending_tokens)
        if planned.tool_call is not None:
            await self._emit_tool_call(model, planned.tool_call)
            return
        await self._succeed("eosFound")

    async def _emit_tool_call(self, model: str, call: tools.ToolCall) -> None:
        """LM Studio's tool call packets: start, name, argument fragments, then end (or failed)."""
        await self.send({"type": "toolCallGenerationStart", "toolCallId": call.call_id})
        await self.send({"type": "toolCallGenerationNameReceived", "name": call.name})
        text = call.arguments_json()
        for piece in [text[i : i + 8] for i in range(0, len(text), 8)]:
            if self.state.faults_for(model).stall_in_tool_call:
                await self._cancel.wait()  # the fault: hold the call open until the client cancels
            if self._cancel.is_set():
                await self._succeed("userStopped")
                return
            await self.send({"type": "toolCallGenerationArgumentFragmentGenerated", "content": piece})
        if call.failed:
            error = protocol.server_error("Failed to parse tool call: the arguments are not valid JSON")
            await self.send({"type": "toolCallGenerationFailed", "error": error, "rawContent": text})
            await self._succeed("eosFound")
            return
        with self.state.changing():
            self.record.tool_calls.append(call.request())
        await self.send({"type": "toolCallGenerationEnd", "toolCallRequest": call.request()})
        await self._succeed("toolCalls")

    async def _flush(self, text: str, tokens: int) -> None:
        if text:
            await self._fragment(text, tokens, "none")

    async def _fragment(self, text: str, tokens: int, reasoning_type: str) -> None:
        fragment = {
            "content": text,
            "tokensCount": tokens,
            "containsDrafted": False,
            "reasoningType": reasoning_type,
            "isStructural": False,
        }
        await self.send({"type": "fragment", "fragment": fragment})

    async def _succeed(self, stop_reason: str) -> None:
        """Send the one final `success` and close the channel."""
        assert self._model is not None and self._spec is not None
        now = time.monotonic()
        predicted = self.record.tokens_generated
        stats: dict[str, Any] = {
            "stopReason": stop_reason,
            "numGpuLayers": 0,
            "totalTimeSec": now - self._started,
            "promptTokensCount": self._prompt_tokens,
            "predictedTokensCount": predicted,
            "totalTokensCount": self._prompt_tokens + predicted,
        }
        if self._first_token_at is not None and self._generating_since is not None:
            stats["timeToFirstTokenSec"] = self._first_token_at - self._generating_since
            stats["tokensPerSecond"] = predicted / max(now - self._generating_since, 1e-6)
        # A prediction cancelled during its JIT load has no instance: report the model's would-be one.
        instance = self._instance or Instance(self._model, self._spec, "sim-instance-ref-unloaded")
        status: Status = "cancelled" if stop_reason == "userStopped" else "completed"
        self._finish(status, stop_reason=stop_reason)
        await self.send(
            {
                "type": "success",
                "stats": stats,
                "modelInfo": instance.info(),
                "loadModelConfig": self.state.catalogue.load_config(instance),
                "predictionConfig": {"fields": self._request.fields},
            }
        )
        await self.close()
