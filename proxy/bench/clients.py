"""The bench's clients: one stream direct (lmstudio SDK) or through the proxy (httpx or minimal), and batches.

They also reset the simulator's and the proxy's state between measurements. This and the bridge
are the only modules that import `lmstudio`: measuring the SDK without the proxy is the bench's point.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TextIO

import httpx
import lmstudio

from proxy.bench.errors import BenchError
from proxy.bench.raw_client import RawClient
from proxy.bench.settings import API_KEY, PHASE_TIMEOUT, SIMULATED_MODEL, STEP_TIMEOUT
from proxy.bench.streams import TERMINAL_EVENTS, Sample, owned_tasks, sse_events

Side = Literal["direct", "proxy", "raw"]  # raw: through the proxy with the minimal HTTP client


class Clients:
    """One SDK client, one httpx client to the proxy and one to the simulator, on one event loop."""

    def __init__(
        self,
        model: lmstudio.AsyncLLM,
        model_key: str,
        http: httpx.AsyncClient,
        sim: httpx.AsyncClient | None,
        log: TextIO,
    ) -> None:
        self.model = model
        self.model_key = model_key
        self.http = http
        self.sim = sim
        self.log = log
        self.began = time.perf_counter()
        self.run_id = uuid.uuid4().hex[:8]  # makes every prompt unique, to find its simulator record
        self.proxy_url = str(http.base_url).rstrip("/")
        self._raw: list[RawClient] = []  # idle minimal clients, each with its open connection

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, lm_host: str, proxy_url: str, sim_url: str | None, model_key: str | None, log: TextIO
    ) -> AsyncIterator[Clients]:
        """The clients, with the model resolved: `model_key`, or the simulator's, or LM Studio's first loaded."""
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with contextlib.AsyncExitStack() as stack:
            lm = await stack.enter_async_context(lmstudio.AsyncClient(lm_host))
            http = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=proxy_url, headers={"X-API-Key": API_KEY}, timeout=STEP_TIMEOUT, limits=limits
                )
            )
            sim = None
            if sim_url:
                sim = await stack.enter_async_context(httpx.AsyncClient(base_url=sim_url, timeout=STEP_TIMEOUT))
            key = model_key or (SIMULATED_MODEL if sim_url else "")
            if not key:
                loaded = await lm.llm.list_loaded()
                if not loaded:
                    raise BenchError("LM Studio has no model loaded: load one, or name one with --model")
                key = loaded[0].identifier
            clients = cls(await lm.llm.model(key), key, http, sim, log)
            try:
                yield clients
            finally:
                for raw in clients._raw:
                    await raw.aclose()

    def say(self, text: str) -> None:
        print(f"bench: [{time.perf_counter() - self.began:6.1f} s] {text}", file=self.log, flush=True)

    def prompt(self, tag: str, tokens: int) -> str:
        """A prompt unique to this run and `tag`; the simulator generates `tokens` tokens for it."""
        return f"bench {self.run_id} {tag} [tokens={tokens}]"

    # -- one stream each way ---------------------------------------------------------------------

    async def direct(self, prompt: str, tokens: int) -> Sample:
        sample = Sample(started=time.perf_counter())
        stream = await self.model.respond_stream(prompt, config={"maxTokens": tokens})
        try:
            await stream.start()
            async for fragment in stream:
                if sample.first_token is None and fragment.content:
                    sample.first_token = time.perf_counter()
                sample.tokens += fragment.tokens_count
        finally:
            await stream.aclose()
        sample.ended = time.perf_counter()
        return sample

    async def proxy(
        self,
        prompt: str,
        tokens: int | None,
        sample: Sample | None = None,
        changed: asyncio.Event | None = None,
        close_when: Callable[[Sample], bool] | None = None,
    ) -> Sample:
        """One SSE stream through the proxy; `close_when(sample)`, checked after each delta, disconnects."""
        sample = sample or Sample()
        body: dict[str, Any] = {
            "inputs": [{"role": "user", "content": prompt}],
            "stream": True,
            "model": self.model_key,
        }
        if tokens is not None:
            body["max_tokens"] = tokens
        sample.started = time.perf_counter()
        async with self.http.stream("POST", "/v1/model/response", json=body) as response:
            if response.status_code != 200:
                raise BenchError(f"the proxy answered {response.status_code}: {(await response.aread())[:300]!r}")
            async with contextlib.aclosing(sse_events(response)) as events:
                async for event in events:
                    if event is None:
                        break
                    name = event.get("event")
                    sample.thread_id = sample.thread_id or str(event.get("thread_id") or "")
                    if name == "response.content_delta":
                        if sample.first_token is None:
                            sample.first_token = time.perf_counter()
                        sample.deltas += 1
                        if sample.text is not None:
                            sample.text.append(str(event.get("delta", "")))
                        if changed is not None:
                            changed.set()
                        if close_when is not None and close_when(sample):
                            break  # leaving the block closes the half-read response: the connection goes
                    elif name in TERMINAL_EVENTS:
                        sample.terminal, sample.terminal_at = str(name), time.perf_counter()
                        if name == "response.error":
                            raise BenchError(f"the proxy sent response.error: {event.get('message')}")
                        if name == "response.completed":
                            sample.tokens = int(event["usage"]["output_tokens"])
                        if changed is not None:
                            changed.set()
        sample.ended = time.perf_counter()
        return sample

    async def raw(self, prompt: str, tokens: int) -> Sample:
        """One stream through the proxy with the minimal client: read to its end, frames not parsed."""
        client = self._raw.pop() if self._raw else RawClient(self.proxy_url)
        sample = Sample(started=time.perf_counter())
        body = {"inputs": [{"role": "user", "content": prompt}], "stream": True, "model": self.model_key}
        try:
            sample.tokens = await client.stream({**body, "max_tokens": tokens})
        except BaseException:
            await client.aclose()
            raise
        self._raw.append(client)
        sample.ended = time.perf_counter()
        return sample

    async def batch(self, side: Side, count: int, tokens: int, tag: str) -> list[Sample]:
        """`count` concurrent streams of `tokens` tokens, all to their end."""
        async with owned_tasks() as tasks:
            for i in range(count):
                prompt = self.prompt(f"{tag} {i}", tokens)
                if side == "direct":
                    coro = self.direct(prompt, tokens)
                elif side == "raw":
                    coro = self.raw(prompt, tokens)
                else:
                    coro = self.proxy(prompt, tokens)
                tasks.append(asyncio.create_task(coro))
            async with asyncio.timeout(PHASE_TIMEOUT):
                return list(await asyncio.gather(*tasks))

    # -- the simulator and the proxy's state -----------------------------------------------------

    async def record(self, marker: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The simulator's record of the prediction whose prompt holds `marker`, once `ready(record)`."""
        assert self.sim is not None
        deadline = time.perf_counter() + STEP_TIMEOUT
        while True:
            response = await self.sim.get("/simulator/predictions")
            response.raise_for_status()
            for record in response.json():
                if any(marker in m["text"] for m in record["history"]) and ready(record):
                    return dict(record)
            if time.perf_counter() > deadline:
                raise BenchError(f"the simulator has no finished record for {marker!r}")
            await asyncio.sleep(0.01)  # polling: the simulator has no push; only its own timestamps count

    async def clear_records(self) -> None:
        if self.sim is not None:
            (await self.sim.delete("/simulator/predictions")).raise_for_status()

    async def sim_settings(self, tokens_per_second: float) -> None:
        if self.sim is not None:
            response = await self.sim.post("/simulator/settings", json={"tokens_per_second": tokens_per_second})
            response.raise_for_status()

    async def wait_proxy_idle(self) -> None:
        deadline = time.perf_counter() + STEP_TIMEOUT
        while (await self.http.get("/health")).json()["active_streams"]:
            if time.perf_counter() > deadline:
                raise BenchError("the proxy still has active streams")
            await asyncio.sleep(0.05)
