"""The LM Studio bridge: the only module that imports `lmstudio`.

Design decisions (the SDK traps of the spec are inputs here; do not "simplify" them away):
- One `AsyncClient` per app, opened lazily on the server's loop and reused. Transport
  failures (the SDK does not wrap them) drop it, and the next call opens a new one, so an
  LM Studio restart never needs a proxy restart.
- A prediction is started eagerly (`await stream.start()`): `cancel()` before that is a
  silent no-op in the SDK and the prediction would run to its end.
- Every wait on LM Studio is bounded by a timeout: the async SDK has none of its own.
- Every SDK and transport failure is translated here into `BackendUnavailable` (or
  `ResourceNotFound` for an unknown model); nothing above this module sees SDK types.
- A Bridge is one LM Studio host. Several hosts are several Bridges (`backends.Backends`),
  each told through `on_change` when its host stops or starts answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, NamedTuple

import httpx
import lmstudio
from lmstudio.json_api import PredictionFragmentEvent, PredictionToolCallEvent

from proxy.config import LMStudioConfig
from proxy.errors import BackendUnavailable, ResourceNotFound
from proxy.store import Usage
from proxy.wire.bodies import LMStudioHealth

log = logging.getLogger("proxy.bridge")

FALLBACK_HOST = "localhost:1234"
SDK_DEFAULT_PORTS = (41343, 52993, 16141, 39414, 22931)

#: Errors that mean "the connection to LM Studio is gone or never was".
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    lmstudio.LMStudioWebsocketError,
    lmstudio.LMStudioClientError,
    OSError,
    httpx.HTTPError,
    EOFError,
)

START_HINT = (
    "Start LM Studio and enable its local server (Developer tab → Start Server, or `lms server start`), "
    "point the proxy at it with --lmstudio HOST:PORT or `lmstudio.host` in the config, "
    "or run `lmstudio-proxy serve --simulate` to use the built-in simulator."
)


#: Called right after the cancel is sent: the kernel often wakes LM Studio on the proxy's own
#: core, where it would wait for what the proxy does next (the store commit, the cancel's
#: answer), about a millisecond on a busy machine. `os.sched_yield` lets it read the cancel
#: first; where the OS has none (Windows), nothing. `lmstudio-proxy bench`, alternated runs:
#: cancel → LM Studio p50 1.0 to 2.4 ms before, 0.4 to 0.9 ms after; the cancel's own answer
#: comes up to 0.5 ms later. Not after starting a prediction: there it helped the first token
#: in some runs and cost it in others (±0.3 ms).
_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: None)


class ToolCall(NamedTuple):
    """A function call the model made: the client runs it and sends the result back."""

    id: str
    name: str
    arguments: dict[str, Any]


class Fragment(NamedTuple):
    """One piece of generated text; `kind` is content, reasoning, reasoning_start, reasoning_end,
    or tool_call (then `call` is set and `content` is empty).

    A NamedTuple, not a frozen dataclass: one is built per token, and this is far cheaper.
    """

    content: str
    tokens: int
    kind: str
    call: ToolCall | None = None


_KINDS = {
    "none": "content",
    "reasoning": "reasoning",
    "reasoningStartTag": "reasoning_start",
    "reasoningEndTag": "reasoning_end",
}


def normalize_host(host: str) -> str:
    """`http://h:p/` → `h:p`; users often paste a URL where the SDK wants host:port."""
    host = host.strip()
    for scheme in ("http://", "https://", "ws://", "wss://"):
        if host.startswith(scheme):
            host = host[len(scheme) :]
    return host.rstrip("/")


class Prediction:
    """A started LM Studio prediction: iterate `fragments()`, `cancel()` it, read `usage()`."""

    def __init__(self, stream: Any, on_lost: Callable[[], None]) -> None:
        self._stream = stream
        self._on_lost = on_lost
        self._cancel_sent = False
        self.generated_tokens = 0

    async def fragments(self) -> AsyncIterator[Fragment]:
        """Yield fragments until LM Studio sends its final result.

        The caller bounds the waits: one deadline for the whole stream, rescheduled as tokens
        arrive, costs far less than a timeout around every token.
        """
        try:
            # The SDK's private event iterator: `async for` on the stream drops tool calls (only
            # `act()` sees them, and `act()` runs tools itself, with no cancel).
            async for event in self._stream._iter_events():
                if isinstance(event, PredictionFragmentEvent):
                    fragment = event.arg
                    self.generated_tokens += fragment.tokens_count
                    kind = _KINDS.get(fragment.reasoning_type, "content")
                    yield Fragment(fragment.content, fragment.tokens_count, kind)
                elif isinstance(event, PredictionToolCallEvent):
                    request = event.arg
                    call_id = request.id or f"call_{secrets.token_hex(8)}"
                    yield Fragment("", 0, "tool_call", ToolCall(call_id, request.name, dict(request.arguments or {})))
        except lmstudio.LMStudioServerError as exc:
            raise BackendUnavailable(f"LM Studio failed the prediction: {exc}") from exc
        except TRANSPORT_ERRORS as exc:
            self._on_lost()
            raise BackendUnavailable(f"The connection to LM Studio was lost: {exc}") from exc

    async def cancel(self) -> None:
        """Send LM Studio's `cancel` once (later calls do nothing), then `_yield_cpu`; never raises."""
        if self._cancel_sent:
            return
        self._cancel_sent = True
        try:
            await self._stream.cancel()
        except Exception as exc:  # the drain that follows reports the real problem
            log.warning("sending cancel to LM Studio failed: %s", exc)
            return
        _yield_cpu()

    @property
    def cancel_sent(self) -> bool:
        return self._cancel_sent

    def usage(self) -> Usage:
        """Token counts from LM Studio's final stats, or what was counted if there are none."""
        try:
            stats = self._stream.result().stats
        except BaseException:  # no result (lost, timed out): GeneratorExit is a BaseException
            return Usage(output_tokens=self.generated_tokens, stop_reason=None)
        return Usage(
            input_tokens=stats.prompt_tokens_count or 0,
            output_tokens=stats.predicted_tokens_count or 0,
            stop_reason=stats.stop_reason,
            time_to_first_token=stats.time_to_first_token_sec,
            tokens_per_second=stats.tokens_per_second,
        )

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except BaseException as exc:  # closing a dead channel must not mask the outcome
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.debug("closing prediction stream: %r", exc)


class Bridge:
    """Owns the LM Studio client; turns requests into SDK calls and SDK failures into ProxyErrors."""

    def __init__(self, config: LMStudioConfig, host: str | None = None) -> None:
        self.config = config
        self.configured_host = normalize_host(host if host is not None else config.host)
        self.host: str | None = None  # the host actually connected to
        self._client: lmstudio.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._handles: dict[str, Any] = {}
        self.reconnects = 0
        self.errors = 0
        self.last_error: str | None = None
        self._closing: set[asyncio.Task[None]] = set()  # close tasks of lost clients, awaited in aclose
        self._loading: dict[str, asyncio.Task[Any]] = {}  # model loads in progress, shared by waiters
        self._load_listeners: dict[str, set[Callable[[float], None]]] = {}
        # Told False when a connection fails or is lost, True when one opens (`backends.Backends`).
        self.on_change: Callable[[bool, str | None], None] | None = None

    def where(self) -> str:
        """Where the proxy looks for LM Studio, in words."""
        if self.configured_host:
            return self.configured_host
        ports = ", ".join(str(p) for p in SDK_DEFAULT_PORTS)
        return f"127.0.0.1 ports {ports} (LM Studio's own API ports), then {FALLBACK_HOST}"

    async def client(self) -> lmstudio.AsyncClient:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await self._connect()
        return self._client

    async def _connect(self) -> lmstudio.AsyncClient:
        hosts: list[str | None] = [self.configured_host] if self.configured_host else [None, FALLBACK_HOST]
        problems = []
        for host in hosts:
            client = lmstudio.AsyncClient(host)
            try:
                async with asyncio.timeout(self.config.connect_timeout_seconds):
                    await client.__aenter__()
            except (TimeoutError, *TRANSPORT_ERRORS) as exc:  # type: ignore[misc]
                problems.append(f"{host or 'default ports'}: {exc}")
                await self._close(client)
                continue
            self.host = client.api_host
            if self.reconnects or self.last_error:
                log.info("connected to LM Studio at %s", self.host)
            self.reconnects += 1
            self.last_error = None
            if self.on_change is not None:
                self.on_change(True, None)
            return client
        self.errors += 1
        self.last_error = "; ".join(problems)
        if self.on_change is not None:
            self.on_change(False, self.last_error)
        raise BackendUnavailable(
            f"LM Studio is not reachable (looked at {self.where()}). {START_HINT}",
            {"looked_at": self.where()},
        )

    @staticmethod
    async def _close(client: lmstudio.AsyncClient) -> None:
        try:
            async with asyncio.timeout(5):
                await client.aclose()
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.debug("closing LM Studio client: %r", exc)

    def lost(self) -> None:
        """The connection failed: forget the client so the next call opens a new one."""
        self.errors += 1
        client, self._client = self._client, None
        self._handles.clear()
        if self.on_change is not None:
            self.on_change(False, "the connection to LM Studio was lost")
        if client is not None:
            # Closing may block on a dead socket; do it without holding up the caller.
            task = asyncio.get_running_loop().create_task(self._close(client))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        loads = list(self._loading.values())
        for task in loads:
            task.cancel()
        await asyncio.gather(*loads, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            await self._close(client)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _call(self, what: str, coro_fn: Callable[[lmstudio.AsyncClient], Any], timeout: float) -> Any:
        client = await self.client()
        try:
            async with asyncio.timeout(timeout):
                return await coro_fn(client)
        except TimeoutError as exc:
            raise BackendUnavailable(f"LM Studio did not answer {what} within {timeout:g} s.") from exc
        except lmstudio.LMStudioModelNotFoundError:
            raise
        except lmstudio.LMStudioServerError as exc:
            raise BackendUnavailable(f"LM Studio failed {what}: {exc}") from exc
        except TRANSPORT_ERRORS as exc:
            self.lost()
            raise BackendUnavailable(
                f"The connection to LM Studio was lost during {what} ({exc}). {START_HINT}"
            ) from exc

    async def list_models(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(loaded, downloaded) LLMs as plain dicts: key, display_name, context_length."""

        async def fetch(client: lmstudio.AsyncClient) -> tuple[Any, Any]:
            return await client.llm.list_loaded(), await client.list_downloaded_models()

        loaded, downloaded = await self._call("listing models", fetch, self.config.connect_timeout_seconds)
        loaded_info = []
        for handle in loaded:

            async def info_of(_client: lmstudio.AsyncClient, handle: Any = handle) -> Any:
                return await handle.get_info()

            info = await self._call("getModelInfo", info_of, self.config.connect_timeout_seconds)
            loaded_info.append(
                {
                    "key": info.model_key,
                    "identifier": info.identifier,
                    "display_name": info.display_name,
                    "context_length": info.context_length,
                    **_details(info),
                }
            )
        down = [
            {
                "key": m.model_key,
                "display_name": m.info.display_name,
                "context_length": m.info.max_context_length,
                **_details(m.info),
            }
            for m in downloaded
            if getattr(m, "type", "llm") == "llm"
        ]
        return loaded_info, down

    async def health(self) -> LMStudioHealth:
        try:
            loaded, _ = await self.list_models()
        except BackendUnavailable as exc:
            return {"reachable": False, "looked_at": self.where(), "error": exc.message}
        return {
            "reachable": True,
            "host": self.host,
            "looked_at": self.where(),
            "loaded_models": [m["identifier"] for m in loaded],
        }

    def link_down(self) -> bool:
        """Whether the open client's websocket has closed (LM Studio went away), seen without a
        round trip: the SDK clears its socket when its receive task ends. False when unknown."""
        if self._client is None:
            return False
        # Private SDK attributes, read defensively: a missing one means "not known to be down".
        session = getattr(self._client, "_sessions", {}).get("llm")
        handler = getattr(getattr(session, "_lmsws", None), "_ws_handler", None)
        return handler is not None and getattr(handler, "_ws", True) is None

    def loaded_here(self) -> Collection[str]:
        """The models this bridge has a handle for (loaded through it since it connected)."""
        return self._handles.keys()

    def loaded_handle(self, key: str) -> Any:
        """The handle of a model already loaded through this bridge, or None (no round trip)."""
        return self._handles.get(key)

    async def load(self, key: str, on_progress: Callable[[float], None] | None = None) -> Any:
        """The model handle for `key`, loading the model if LM Studio has it downloaded only.

        A load is shared by every request that waits for the same model, and a waiter that
        gives up (its stream was cancelled) does not abort it: the model is a shared resource,
        and closing the load channel early would only make LM Studio answer into the void.
        """
        handle = self._handles.get(key)
        if handle is not None:
            return handle
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(key), name=f"load-{key}")
            self._loading[key] = task
            task.add_done_callback(self._load_done)
        listeners = self._load_listeners.setdefault(key, set())
        if on_progress is not None:
            listeners.add(on_progress)
        try:
            return await asyncio.shield(task)
        finally:
            listeners.discard(on_progress)

    def _load_done(self, task: asyncio.Task[Any]) -> None:
        key = task.get_name().removeprefix("load-")
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have gone

    async def _load(self, key: str) -> Any:
        def progress(value: float) -> None:
            for listener in list(self._load_listeners.get(key, ())):
                listener(value)

        try:
            handle = await self._call(
                f"loading model '{key}'",
                lambda c: c.llm.model(key, on_load_progress=progress),
                self.config.load_timeout_seconds,
            )
        except lmstudio.LMStudioModelNotFoundError as exc:
            raise ResourceNotFound(f"Model '{key}' not found in LM Studio.") from exc
        self._handles[key] = handle
        return handle

    async def prepare_image(self, data: bytes, name: str) -> dict[str, Any]:
        """Upload an image to LM Studio; the file handle, as a chat-history message part."""

        async def upload(client: lmstudio.AsyncClient) -> Any:
            return await client.files.prepare_image(data, name)

        handle = await self._call("uploading an image", upload, self.config.connect_timeout_seconds)
        part: dict[str, Any] = handle.to_dict()
        return part

    async def predict(self, handle: Any, messages: list[dict[str, Any]], config: dict[str, Any]) -> Prediction:
        """Send the prediction request now (eagerly) and return it."""

        async def start(_client: lmstudio.AsyncClient) -> Any:
            stream = await handle.respond_stream({"messages": messages}, config=config)
            await stream.start()
            return stream

        stream = await self._call("starting the prediction", start, self.config.connect_timeout_seconds)
        return Prediction(stream, self.lost)

    async def complete(
        self,
        key: str,
        messages: list[dict[str, str]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        on_text: Callable[[str], Awaitable[None]] | None = None,
    ) -> str:
        """A short prediction's whole answer text (titles): loads the model, bounded by a timeout.

        `on_text` gets each content fragment as it arrives (reasoning is skipped). The SDK is
        iterated in a task of its own, so a caller that is cancelled (its client went away) or
        runs out of time never interrupts the SDK's iteration, which would close the channel
        silently and leave LM Studio generating: `cancel` is sent first, then the iteration
        drains to LM Studio's final answer (bounded), then the caller's cancellation goes on.
        """
        handle = await self.load(key)
        prediction = await self.predict(handle, messages, prediction_config(temperature, None, max_tokens))
        parts: list[str] = []

        async def drain() -> None:
            async for fragment in prediction.fragments():
                if fragment.kind == "content" and fragment.content:
                    parts.append(fragment.content)
                    if on_text is not None:
                        await on_text(fragment.content)

        iteration = asyncio.ensure_future(drain())
        try:
            async with asyncio.timeout(self.config.fragment_timeout_seconds):
                await asyncio.shield(iteration)
        except BaseException as exc:
            if not iteration.done():  # cancelled or timed out, not failed: stop LM Studio first
                await asyncio.shield(prediction.cancel())
                with contextlib.suppress(BaseException):
                    async with asyncio.timeout(self.config.connect_timeout_seconds):
                        await asyncio.shield(iteration)
                iteration.cancel()
                await asyncio.gather(iteration, return_exceptions=True)
            if isinstance(exc, TimeoutError):
                raise BackendUnavailable(
                    f"LM Studio did not finish within {self.config.fragment_timeout_seconds:g} s."
                ) from exc
            raise
        finally:
            await asyncio.shield(prediction.aclose())
        return "".join(parts)


def _details(info: Any) -> dict[str, Any]:
    """What LM Studio says a model can do (`LlmInfo`/`LlmInstanceInfo`), as plain values."""
    return {
        "vision": bool(getattr(info, "vision", False)),
        "trained_for_tool_use": bool(getattr(info, "trained_for_tool_use", False)),
        "max_context_length": getattr(info, "max_context_length", None),
        "architecture": getattr(info, "architecture", None),
        "params_string": getattr(info, "params_string", None),
        "format": getattr(info, "format", None),
        "size_bytes": getattr(info, "size_bytes", None),
    }


def prediction_config(
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    schema: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """LM Studio's prediction config; `tools` as `{name, description, parameters}` each."""
    config: dict[str, Any] = {}
    if tools:
        config["rawTools"] = {
            "type": "toolArray",
            "tools": [{"type": "function", "function": {k: v for k, v in t.items() if v is not None}} for t in tools],
        }
    if schema is not None:  # structured output: LM Studio constrains the answer to the schema
        config["structured"] = {"type": "json", "jsonSchema": schema}
    if temperature is not None:
        config["temperature"] = temperature
    if top_p is not None:
        config["topPSampling"] = top_p
    if max_tokens is not None:
        config["maxTokens"] = max_tokens
    return config
