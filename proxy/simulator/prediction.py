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
  `fail_after_tokens` ends with channelError; `drop_after_tokens` closes the socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

from proxy.simulator import protocol, textgen
from proxy.simulator.channel import Channel, Connection, ConnectionGone
from proxy.simulator.clock import pause
from proxy.simulator.loading import load_model
from proxy.simulator.models import specifier_query
from proxy.simulator.records import PredictionRecord, Status
from proxy.simulator.state import SimState

PROMPT_STEPS = 4
MAX_TOKENS_KEY = "llm.prediction.maxPredictedTokens"
STOP_STRINGS_KEY = "llm.prediction.stopStrings"

Token = tuple[str, str]  # (text, reasoningType)


def _history(params: dict[str, Any]) -> list[dict[str, str]]:
    history = params.get("history")
    messages = history.get("messages", []) if isinstance(history, dict) else []
    result = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        parts = content if isinstance(content, list) else []
        text = "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
        result.append({"role": str(message.get("role", "")), "text": text})
    return result


def _config_fields(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Merge the prediction config stack's layers (later layers win) into one field list."""
    stack = params.get("predictionConfigStack")
    layers = stack.get("layers", []) if isinstance(stack, dict) else []
    merged: dict[str, Any] = {}
    for layer in layers if isinstance(layers, list) else []:
        config = layer.get("config", {}) if isinstance(layer, dict) else {}
        for field in config.get("fields", []) if isinstance(config, dict) else []:
            if isinstance(field, dict) and isinstance(field.get("key"), str):
                merged[field["key"]] = field.get("value")
    return [{"key": k, "value": v} for k, v in merged.items()]


def _max_tokens(config: dict[str, Any]) -> int | None:
    value = config.get(MAX_TOKENS_KEY)
    if isinstance(value, dict) and value.get("checked") and isinstance(value.get("value"), int):
        return max(0, int(value["value"]))
    return None


def _stop_strings(config: dict[str, Any]) -> list[str]:
    value = config.get(STOP_STRINGS_KEY)
    return [s for s in value if isinstance(s, str) and s] if isinstance(value, list) else []


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
        self._params: dict[str, Any] = params if isinstance(params, dict) else {}
        self._fields = _config_fields(self._params)
        self._config = {f["key"]: f["value"] for f in self._fields}
        self._query = specifier_query(self._params.get("modelSpecifier"))
        spec = state.catalogue.resolve(self._query)
        self._model = spec.key if spec is not None else None
        self._reasoning = spec.reasoning if spec is not None else False
        self._cancel = asyncio.Event()
        self.record: PredictionRecord = state.new_record(
            self._model or self._query, _history(self._params), dict(self._config)
        )
        self._prompt_tokens = sum(textgen.count_tokens(m["text"]) + 4 for m in self.record.history)
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
            loaded = [info["identifier"] for info in catalogue.loaded_infos()]
            self._finish("failed", error="model not found")
            await self.fail(protocol.model_not_found(self._query, loaded))
            return
        # JIT load: the predict channel has no load packets, so the load is silent.
        if not catalogue.is_loaded(model) and not await load_model(self.state, model, self._cancel):
            await self._succeed("userStopped")
            return
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
            await self.send({"type": "promptProcessingProgress", "progress": i / PROMPT_STEPS})
        await self._generate(model)

    def _plan(self) -> Iterator[Token]:
        last_user = next((m["text"] for m in reversed(self.record.history) if m["role"] == "user"), "")
        length = textgen.requested_length(last_user)
        length = textgen.DEFAULT_ANSWER_TOKENS if length is None else length
        if self._reasoning:
            yield "<think>", "reasoningStartTag"
            for text in textgen.reasoning_tokens(last_user):
                yield text, "reasoning"
            yield "</think>", "reasoningEndTag"
            yield "\n\n", "none"
        for text in islice(textgen.answer_tokens(last_user), length):
            yield text, "none"

    async def _generate(self, model: str) -> None:
        max_tokens = _max_tokens(self._config)
        stops = _stop_strings(self._config)
        pending, pending_tokens = "", 0  # answer text held back while it may start a stop string
        generated = 0
        self._generating_since = time.monotonic()
        for text, reasoning_type in self._plan():
            tps = self.state.settings_for(model).tokens_per_second
            if await pause(1 / tps if tps > 0 else 0, self._cancel):
                await self._succeed("userStopped")
                return
            if max_tokens is not None and generated >= max_tokens:
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
        await self._succeed("eosFound")

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
        assert self._model is not None
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
        status: Status = "cancelled" if stop_reason == "userStopped" else "completed"
        self._finish(status, stop_reason=stop_reason)
        await self.send(
            {
                "type": "success",
                "stats": stats,
                "modelInfo": self.state.catalogue.instance_info(self._model),
                "loadModelConfig": self.state.catalogue.load_config(),
                "predictionConfig": {"fields": self._fields},
            }
        )
        await self.close()
