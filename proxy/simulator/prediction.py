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
import json
import re
import time
from collections.abc import Iterator
from itertools import islice
from typing import Any

from proxy.simulator import gbnf, protocol, schemagen, textgen, tools
from proxy.simulator.catalogue import Instance
from proxy.simulator.channel import Channel, Connection, ConnectionGone
from proxy.simulator.clock import pause
from proxy.simulator.loading import load_model
from proxy.simulator.models import specifier_query
from proxy.simulator.records import PredictionRecord, Status
from proxy.simulator.state import SimState

PROMPT_STEPS = 4
MAX_TOKENS_KEY = "llm.prediction.maxPredictedTokens"
STOP_STRINGS_KEY = "llm.prediction.stopStrings"
TOOLS_KEY = "llm.prediction.tools"
STRUCTURED_KEY = "llm.prediction.structured"
REASONING_PARSING_KEY = "llm.prediction.reasoning.parsing"
DRAFT_MODEL_KEY = "llm.prediction.speculativeDecoding.draftModel"

Token = tuple[str, str]  # (text, reasoningType)


def _history(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat as the record shows it: role, text, and the files / tool calls / tool results it carries."""
    history = params.get("history")
    messages = history.get("messages", []) if isinstance(history, dict) else []
    result = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        parts = [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []
        text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str))
        entry: dict[str, Any] = {"role": str(message.get("role", "")), "text": text}
        files = [
            {k: p.get(k) for k in ("identifier", "name", "fileType", "sizeBytes")}
            for p in parts
            if p.get("type") == "file"
        ]
        if files:
            entry["files"] = files
        calls = [p.get("toolCallRequest") for p in parts if p.get("type") == "toolCallRequest"]
        if calls:
            entry["tool_calls"] = calls
        results = [str(p.get("content", "")) for p in parts if p.get("type") == "toolCallResult"]
        if results:
            entry["tool_results"] = results
        result.append(entry)
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


def _words(text: str) -> Iterator[Token]:
    """Plain answer tokens: each word with its leading space."""
    for word in re.findall(r"\s*\S+\s*", text):
        yield word, "none"


def _chunks(text: str, size: int = 4) -> Iterator[Token]:
    for i in range(0, len(text), size):
        yield text[i : i + size], "none"


class PredictionChannel(Channel):
    """One `predict` channel and its record."""

    def __init__(self, conn: Connection, channel_id: int, state: SimState, params: Any) -> None:
        super().__init__(conn, channel_id, state)
        self._params: dict[str, Any] = params if isinstance(params, dict) else {}
        self._fields = _config_fields(self._params)
        self._config = {f["key"]: f["value"] for f in self._fields}
        self._query = specifier_query(self._params.get("modelSpecifier"))
        self._instance = state.catalogue.instance(self._query, "llm")
        spec = self._instance.spec if self._instance is not None else state.catalogue.resolve(self._query, "llm")
        self._spec = spec
        self._model = spec.key if spec is not None else None
        self._reasoning = spec.reasoning if spec is not None else False
        self._cancel = asyncio.Event()
        history = _history(self._params)
        self._tools = tools.offered(self._config.get(TOOLS_KEY))
        structured = self._config.get(STRUCTURED_KEY)
        self._structured = structured if isinstance(structured, dict) and structured.get("type") != "none" else None
        preset = self._params.get("fuzzyPresetIdentifier")
        draft = self._config.get(DRAFT_MODEL_KEY)
        self.record: PredictionRecord = state.new_record(self._model or self._query, history, dict(self._config))
        with state.changing():
            self.record.tools = [t["name"] for t in self._tools]
            self.record.structured = self._structured
            self.record.images = [f for m in history for f in m.get("files", []) if f.get("fileType") == "image"]
            self.record.preset = preset if isinstance(preset, str) else None
            self.record.draft_model = draft if isinstance(draft, str) and draft else None
        self._prompt_tokens = sum(textgen.count_tokens(m["text"]) + 4 for m in self.record.history)
        self._started = time.monotonic()
        self._first_token_at: float | None = None
        self._generating_since: float | None = None
        self._tool_call: tools.ToolCall | None = None

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

    def _refusal(self) -> dict[str, Any] | None:
        """The error LM Studio answers a prediction with before generating anything, if any."""
        record = self.record
        if record.preset is not None:
            # The simulator has no presets: every preset is unknown (LM Studio's error and code).
            return protocol.server_error(
                f'Cannot find preset "{record.preset}"',
                "generic.presetNotFound",
                specifiedFuzzyPresetIdentifier=record.preset,
            )
        if record.draft_model is not None:
            draft = self.state.catalogue.resolve(record.draft_model, "llm")
            if draft is None:
                return protocol.server_error(f'Draft model "{record.draft_model}" not found')
            if draft.key == self._model:
                return protocol.server_error("The draft model must be different from the main model")
        if record.images and self._spec is not None and not self._spec.vision:
            return protocol.server_error(f'Model "{self._model}" does not support images: it is not a vision model')
        if self._structured is not None:
            try:
                if self._structured.get("type") == "json":
                    schemagen.validate(self._structured.get("jsonSchema"))
                elif self._structured.get("type") == "gbnf":
                    gbnf.parse(str(self._structured.get("gbnfGrammar", "")))
                else:
                    raise schemagen.SchemaError(f"unknown structured output type {self._structured.get('type')!r}")
            except (schemagen.SchemaError, gbnf.GrammarError) as exc:
                return protocol.server_error(f"Invalid structured output configuration: {exc}")
        return None

    async def _run(self) -> None:
        model = self._model
        catalogue = self.state.catalogue
        if model is None:
            loaded = [i.identifier for i in catalogue.instances("llm")]
            self._finish("failed", error="model not found")
            await self.fail(protocol.model_not_found(self._query, loaded))
            return
        refusal = self._refusal()
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

    def _plan(self) -> Iterator[Token]:
        history = self.record.history
        last_user = next((m["text"] for m in reversed(history) if m["role"] == "user"), "")
        if history and history[-1].get("tool_results"):
            # The tool results are back: answer in text, quoting them.
            calls: list[Any] = next(
                (m.get("tool_calls", []) for m in reversed(history) if m["role"] == "assistant"), []
            )
            names = [str(c.get("name")) for c in calls if isinstance(c, dict)]
            yield from _words(tools.answer_from_results(history[-1]["tool_results"], names))
            return
        self._tool_call = tools.plan(self._tools, last_user, self.record.id)
        if self._tool_call is not None:
            yield from _words(tools.preamble(self._tool_call))
            return
        if self._structured is not None:
            yield from _chunks(self._structured_text(last_user))
            return
        requested = textgen.requested_length(last_user)
        length = textgen.DEFAULT_ANSWER_TOKENS if requested is None else requested
        if self._reasoning:
            parsing = self._config.get(REASONING_PARSING_KEY)
            parsing = parsing if isinstance(parsing, dict) else {}
            start = str(parsing.get("startString") or "<think>")
            end = str(parsing.get("endString") or "</think>")
            parsed = parsing.get("enabled", True) is not False
            yield start, "reasoningStartTag" if parsed else "none"
            for text in textgen.reasoning_tokens(last_user):
                yield text, "reasoning" if parsed else "none"
            yield end, "reasoningEndTag" if parsed else "none"
            yield "\n\n", "none"
        if self.record.images:
            yield from _words(f"The image shows {len(self.record.images)} picture(s). ")
        if requested is None and textgen.is_greeting(last_user):  # `[tokens=N]` keeps its exact length
            yield from _words("Hello! How can I help you today?\n\n")
        for text in islice(textgen.answer_tokens(last_user), length):
            yield text, "none"

    def _structured_text(self, prompt: str) -> str:
        assert self._structured is not None
        if self._structured.get("type") == "gbnf":
            return gbnf.generate(str(self._structured.get("gbnfGrammar", "")))
        return json.dumps(schemagen.generate(self._structured.get("jsonSchema"), prompt))

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
        if self._tool_call is not None:
            await self._emit_tool_call(model, self._tool_call)
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
                "predictionConfig": {"fields": self._fields},
            }
        )
        await self.close()
