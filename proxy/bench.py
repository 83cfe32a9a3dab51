"""`lmstudio-proxy bench`: the proxy's overhead, measured side by side with direct use of the lmstudio SDK.

Design decisions (read why before changing them):
- Three processes. This one runs every client: the lmstudio SDK for "direct", httpx (HTTP + SSE) for
  "proxy". The proxy runs as `python -m proxy serve` (real uvicorn, real SQLite in a temporary
  directory) so that /proc/PID gives its CPU time and RSS alone; with --simulate the simulator runs as
  `python -m proxy simulate` at full speed. Every child is terminated and the temporary directory
  removed however the run ends (errors and Ctrl-C included).
- Direct and proxied samples alternate (TTFT) or run back to back (throughput): a change in the
  machine's load then hits both sides.
- Intervals are `time.perf_counter()` in this process; `time.time()` is used only to meet the
  simulator's unix timestamps (`cancel_received_at` in `GET /simulator/predictions`).
- This is the one module besides the bridge that imports `lmstudio`: measuring the SDK without the
  proxy is its point.
- Targets are shown beside the figures for information; the exit status is 0 whenever the run completed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

import httpx
import lmstudio

from proxy import sse

DEFAULT_STREAMS = (1, 8, 32, 128)
DEFAULT_TOKENS = 500  # per stream, in the throughput runs
DEFAULT_REPEAT = 100  # TTFT pairs, cancels and disconnects
MIN_RELAY_SECONDS = 1.0  # a throughput level repeats its direct batch this long; the proxy runs as many rounds
TTFT_TOKENS = 8
LONG_TOKENS = 100_000  # cancel, disconnect and memory streams: cut short long before the end
DELTAS_BEFORE_STOP = 3
WARMUP = 10
MEMORY_TOKENS_PER_SECOND = 20.0  # the simulator's speed while the memory streams are open
STOP_TOKENS_PER_SECOND = 200.0  # the simulator's speed while cancels and disconnects are timed
MEMORY_STREAMS_LMSTUDIO = 4  # a real LM Studio may queue parallel predictions: keep the memory run small
SIMULATED_MODEL = "simulated-llm"
API_KEY = "bench"
T = TypeVar("T")
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
STEP_TIMEOUT = 60.0  # any one wait: an event to arrive, a request to be answered
PHASE_TIMEOUT = 900.0  # a whole batch of streams

STATIC_PATH = "/v1/model/response/output-modes"  # a small fixed JSON answer, for timing the clients alone
TARGETS = {
    "ttft_overhead_p50_ms": 2.0,
    "ttft_overhead_p99_ms": 10.0,
    "relay_ratio_1": 0.70,
    "relay_ratio_32": 0.50,
    "cancel_to_lmstudio_p50_ms": 5.0,
    "cancel_to_lmstudio_p99_ms": 20.0,
    "disconnect_to_lmstudio_p99_ms": 100.0,
    "rss_per_stream_kb": 200.0,
}


class BenchError(Exception):
    """The benchmark could not run (a process did not start, a request failed); the message says why."""


# -- command line ----------------------------------------------------------------------------------


def _stream_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"stream counts must be >= 1, got {text!r}")
    return counts


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--simulate", action="store_true", help="run against the built-in simulator at full speed (the default)"
    )
    where.add_argument("--lmstudio", metavar="HOST:PORT", help="run against this LM Studio")
    parser.add_argument(
        "--streams",
        type=_stream_counts,
        default=DEFAULT_STREAMS,
        metavar="N,N,...",
        help=f"concurrent streams for the throughput runs (default: {','.join(map(str, DEFAULT_STREAMS))})",
    )
    parser.add_argument(
        "--tokens", type=_positive, default=DEFAULT_TOKENS, help="tokens per throughput stream (default: %(default)s)"
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=DEFAULT_REPEAT,
        help="samples for TTFT (each side), cancel and disconnect (default: %(default)s)",
    )
    parser.add_argument(
        "--model", metavar="KEY", help="model key (default: simulated-llm, or LM Studio's first loaded)"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    """Start the simulator (with --simulate) and the proxy, measure, print; 0 once the run completed."""
    simulate = not args.lmstudio
    workdir = Path(tempfile.mkdtemp(prefix="lmstudio-proxy-bench-"))
    children: list[Child] = []
    try:
        sim_url: str | None = None
        if simulate:
            sim_port = _free_port()
            sim = Child("simulator", workdir / "simulator.log")
            children.append(sim)
            speed = ["--tokens-per-second", "0", "--load-seconds", "0", "--prompt-seconds", "0"]
            sim.start([sys.executable, "-m", "proxy", "simulate", "--port", str(sim_port), *speed])
            sim_url = f"http://127.0.0.1:{sim_port}"
            sim.wait_ready(f"{sim_url}/lmstudio-greeting")
            lm_host = f"127.0.0.1:{sim_port}"
        else:
            lm_host = str(args.lmstudio)
        config = workdir / "config.toml"
        config.write_text('[logging]\nlevel = "warning"\n')
        proxy_port = _free_port()
        proxy = Child("proxy", workdir / "proxy.log")
        children.append(proxy)
        files = ["--database", str(workdir / "bench.sqlite3"), "--config", str(config)]
        proxy.start([sys.executable, "-m", "proxy", "serve", "--lmstudio", lm_host, "--port", str(proxy_port), *files])
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        proxy.wait_ready(f"{proxy_url}/health")
        bench = Bench(args, lm_host=lm_host, proxy=proxy, proxy_url=proxy_url, sim_url=sim_url, log=sys.stderr)
        try:
            report = asyncio.run(bench.run())
        except (lmstudio.LMStudioError, httpx.HTTPError, OSError) as exc:
            raise BenchError(f"{type(exc).__name__}: {exc}") from exc
        for child in children:
            child.check_running()
    except BenchError as exc:
        print(f"lmstudio-proxy bench: {exc}", file=sys.stderr, flush=True)
        for child in children:
            if tail := child.log_tail():
                print(f"--- the {child.name}'s last output:\n{tail}", file=sys.stderr, flush=True)
        return 1
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(report, indent=2) if args.json else render(report), flush=True)
    return 0


# -- the child processes ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """A subprocess with its output in a log file; `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, argv: list[str]) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_running(self) -> None:
        assert self.process is not None
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"the {self.name} exited (status {code}); its last output:\n{self.log_tail()}")

    def wait_ready(self, url: str) -> None:
        """Poll `url` until it answers 200 (the child's own readiness signal is its listening socket)."""
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0) as http:
            while True:
                self.check_running()
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"the {self.name} did not answer {url} in {START_TIMEOUT:g} s:\n{self.log_tail()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time so far (/proc/PID/stat fields 14 and 15)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise BenchError(f"no VmRSS for the {self.name} (pid {self.pid})")


# -- streams ---------------------------------------------------------------------------------------

TERMINAL_EVENTS = ("response.completed", "response.cancelled", "response.error")


@dataclass
class Sample:
    """One stream as its client saw it; times are perf_counter() values."""

    started: float = 0.0
    first_token: float | None = None
    ended: float = 0.0
    tokens: int = 0
    deltas: int = 0
    thread_id: str = ""
    terminal: str = ""
    terminal_at: float = 0.0
    closed_wall: float = 0.0  # time.time() when the client closed the connection early

    @property
    def ttft(self) -> float:
        if self.first_token is None:
            raise BenchError("a stream ended without any content")
        return self.first_token - self.started


async def _sse_events(response: httpx.Response) -> AsyncGenerator[dict[str, Any] | None]:
    """The JSON objects of `data:` frames as they arrive; None for `data: [DONE]`."""
    reader = sse.EventReader()
    async for chunk in response.aiter_bytes():
        for event in reader.feed(chunk):
            yield event if isinstance(event, dict) else None


@contextlib.asynccontextmanager
async def _owned_tasks() -> AsyncIterator[list[asyncio.Task[Sample]]]:
    """Tasks appended to the list are cancelled (if still running) and awaited when the block ends."""
    tasks: list[asyncio.Task[Sample]] = []
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until(
    condition: Callable[[], bool], changed: asyncio.Event, tasks: Sequence[asyncio.Task[Sample]], what: str
) -> None:
    """Wait until `condition()` holds, re-checked whenever `changed` is set or a task ends.

    A task that failed fails the wait; all tasks ending first, or STEP_TIMEOUT passing, is a BenchError.
    """
    for task in tasks:
        task.add_done_callback(lambda _: changed.set())
    try:
        async with asyncio.timeout(STEP_TIMEOUT):
            while True:
                changed.clear()
                for task in tasks:
                    if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
                        raise exc
                if condition():
                    return
                if all(task.done() for task in tasks):
                    raise BenchError(f"the stream(s) ended before {what}")
                await changed.wait()
    except TimeoutError:
        raise BenchError(f"no {what} within {STEP_TIMEOUT:g} s") from None


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, interpolating between the closest ranks (as numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ms(values: Sequence[float]) -> dict[str, float | int]:
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 3),
        "p99_ms": round(percentile(values, 99) * 1000, 3),
        "samples": len(values),
    }


class RawClient:
    """A minimal HTTP/1.1 client on one keep-alive connection: TTFT through the proxy without httpx.

    httpx spends milliseconds of its own on each request (the bench measures how many on a
    static endpoint); timing with this client shows what the proxy itself adds.
    """

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("http://").partition(":")
        self.host, self.port = host, int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    async def get(self, path: str) -> float:
        """Seconds for a GET whose answer has a Content-Length (a small JSON endpoint)."""
        reader, writer = await self._connection()
        started = time.perf_counter()
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\nX-API-Key: {API_KEY}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
        )
        await reader.readexactly(length)
        return time.perf_counter() - started

    async def ttft(self, body: dict[str, Any]) -> float:
        """Seconds from sending the request to the first content delta; reads the stream to its end."""
        self._reader, self._writer = await self._connection()
        payload = json.dumps(body).encode()
        request = (
            f"POST /v1/model/response HTTP/1.1\r\nHost: {self.host}\r\nX-API-Key: {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        started = time.perf_counter()
        self._writer.write(request)
        buffer, first = b"", None
        while not (buffer.endswith(b"\r\n0\r\n\r\n") and b"data: [DONE]" in buffer):  # chunked body's end
            chunk = await self._reader.read(65536)
            if not chunk:
                raise BenchError("the proxy closed the connection")
            buffer += chunk
            if first is None and b"response.content_delta" in buffer:
                first = time.perf_counter()
        if first is None:
            raise BenchError(f"no content delta in the stream: {buffer[-300:]!r}")
        return first - started

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()


class Bench:
    """The measurements, run on one event loop with one SDK client, one HTTP client, one simulator client."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        lm_host: str,
        proxy: Child,
        proxy_url: str,
        sim_url: str | None,
        log: TextIO,
    ) -> None:
        self.streams: tuple[int, ...] = args.streams
        self.tokens: int = args.tokens
        self.repeat: int = args.repeat
        self.model_key: str = args.model or (SIMULATED_MODEL if sim_url else "")
        self.lm_host = lm_host
        self.proxy = proxy
        self.proxy_url = proxy_url
        self.sim_url = sim_url
        self.log = log
        self.began = time.perf_counter()
        self.run_id = uuid.uuid4().hex[:8]  # makes every prompt unique, to find its simulator record

    def say(self, text: str) -> None:
        print(f"bench: [{time.perf_counter() - self.began:6.1f} s] {text}", file=self.log, flush=True)

    async def run(self) -> dict[str, Any]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with (
            lmstudio.AsyncClient(self.lm_host) as lm,
            httpx.AsyncClient(
                base_url=self.proxy_url, headers={"X-API-Key": API_KEY}, timeout=STEP_TIMEOUT, limits=limits
            ) as http,
            httpx.AsyncClient(base_url=self.sim_url or "http://127.0.0.1:1", timeout=STEP_TIMEOUT) as sim,
        ):
            self.http = http
            self.sim = sim
            if not self.model_key:
                loaded = await lm.llm.list_loaded()
                if not loaded:
                    raise BenchError("LM Studio has no model loaded: load one, or name one with --model")
                self.model_key = loaded[0].identifier
            self.model = await lm.llm.model(self.model_key)
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            await self._warm_up()
            memory = await self._memory()
            ttft = await self._ttft()
            relay = [await self._relay(k) for k in self.streams]
            if self.sim_url:
                # Stops are timed at a real model's pace: at full speed the simulator outruns any
                # client by seconds of buffered tokens, and a stop would measure that backlog.
                await self._sim_settings(STOP_TOKENS_PER_SECOND)
            cancel = await self._cancel()
            disconnect = await self._disconnect() if self.sim_url else None
            report = {
                "setup": {
                    "lmstudio": "simulator at full speed" if self.sim_url else self.lm_host,
                    "model": self.model_key,
                    "cpus": os.cpu_count(),
                    "load_average_before": round(load_before, 2),
                    "load_average_after": round(os.getloadavg()[0], 2),
                    "seconds": round(time.perf_counter() - started, 1),
                    "warm_up": f"{WARMUP} direct and {WARMUP} proxy predictions, then {self._warm_streams()} "
                    "concurrent streams of each, not counted",
                    "tokens_per_stream": self.tokens,
                    "repeat": self.repeat,
                },
                "ttft": ttft,
                "relay": relay,
                "cancel": cancel,
                "disconnect": disconnect,
                "proxy_process": _proxy_process(relay, memory),
            }
            report["checks"] = _checks(report)
            return report

    # -- one stream each way ---------------------------------------------------------------------

    async def _direct(self, prompt: str, tokens: int) -> Sample:
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

    async def _proxy(
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
            async with contextlib.aclosing(_sse_events(response)) as events:
                async for event in events:
                    if event is None:
                        break
                    name = event.get("event")
                    sample.thread_id = sample.thread_id or str(event.get("thread_id") or "")
                    if name == "response.content_delta":
                        if sample.first_token is None:
                            sample.first_token = time.perf_counter()
                        sample.deltas += 1
                        if changed is not None:
                            changed.set()
                        if close_when is not None and close_when(sample):
                            sample.closed_wall = time.time()
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

    async def _batch(self, side: str, count: int, tokens: int, tag: str) -> list[Sample]:
        """`count` concurrent streams of `tokens` tokens, all to their end."""
        async with _owned_tasks() as tasks:
            for i in range(count):
                prompt = f"bench {self.run_id} {tag} {i} [tokens={tokens}]"
                coro = self._direct(prompt, tokens) if side == "direct" else self._proxy(prompt, tokens)
                tasks.append(asyncio.create_task(coro))
            async with asyncio.timeout(PHASE_TIMEOUT):
                return list(await asyncio.gather(*tasks))

    # -- the phases ------------------------------------------------------------------------------

    def _warm_streams(self) -> int:
        return min(8, max(self.streams))

    async def _warm_up(self) -> None:
        self.say("warming up")
        for i in range(WARMUP):
            await self._direct(f"bench warm {i} [tokens={TTFT_TOKENS}]", TTFT_TOKENS)
            await self._proxy(f"bench warm {i} [tokens={TTFT_TOKENS}]", TTFT_TOKENS)
        for side in ("direct", "proxy"):
            await self._batch(side, self._warm_streams(), min(self.tokens, 200), "warm")
        await self._clear_records()

    async def _memory(self) -> dict[str, Any]:
        """RSS idle, then with K streams open mid-generation (the simulator slowed to a human pace)."""
        count = max(self.streams) if self.sim_url else min(max(self.streams), MEMORY_STREAMS_LMSTUDIO)
        self.say(f"memory: {count} open streams")
        await self._wait_proxy_idle()
        idle = self.proxy.rss_bytes()
        if self.sim_url:
            await self._sim_settings(MEMORY_TOKENS_PER_SECOND)
        try:
            changed, release = asyncio.Event(), asyncio.Event()
            samples = [Sample() for _ in range(count)]
            async with _owned_tasks() as tasks:
                for i, sample in enumerate(samples):
                    prompt = f"bench {self.run_id} memory {i} [tokens={LONG_TOKENS}]"
                    coro = self._proxy(prompt, None, sample, changed, lambda _: release.is_set())
                    tasks.append(asyncio.create_task(coro))
                await _until(
                    lambda: all(s.deltas >= DELTAS_BEFORE_STOP for s in samples), changed, tasks, "deltas on all"
                )
                active = self.proxy.rss_bytes()
                release.set()
                async with asyncio.timeout(STEP_TIMEOUT):
                    await asyncio.gather(*tasks)
        finally:
            if self.sim_url:
                await self._sim_settings(0.0)
        await self._wait_proxy_idle()
        await self._clear_records()
        return {"idle_bytes": idle, "active_bytes": active, "streams": count}

    async def _ttft(self) -> dict[str, Any]:
        self.say(f"time to first token: {self.repeat} pairs")
        direct: list[float] = []
        proxy: list[float] = []
        raw: list[float] = []
        prompt = f"Say hello. [tokens={TTFT_TOKENS}]"
        body = {"inputs": [{"role": "user", "content": prompt}], "stream": True, "model": self.model_key,
                "max_tokens": TTFT_TOKENS}  # fmt: skip
        client = RawClient(self.proxy_url)

        async def direct_side() -> None:
            direct.append((await self._direct(prompt, TTFT_TOKENS)).ttft)

        async def httpx_side() -> None:
            proxy.append((await self._proxy(prompt, TTFT_TOKENS)).ttft)

        async def raw_side() -> None:
            raw.append(await client.ttft(body))

        # What httpx costs by itself: the same small GET with each client (no LM Studio involved).
        httpx_get: list[float] = []
        raw_get: list[float] = []

        async def httpx_get_side() -> None:
            started = time.perf_counter()
            (await self.http.get(STATIC_PATH)).raise_for_status()
            httpx_get.append(time.perf_counter() - started)

        async def raw_get_side() -> None:
            raw_get.append(await client.get(STATIC_PATH))

        sides = [direct_side, httpx_side, raw_side]
        try:
            for i in range(self.repeat):
                for side in sides[i % 3 :] + sides[: i % 3]:  # each side goes first as often as the others
                    await side()
            for i in range(self.repeat):
                for side in (httpx_get_side, raw_get_side)[:: 1 if i % 2 else -1]:
                    await side()
        finally:
            await client.aclose()
        await self._clear_records()
        d, p, r = _ms(direct), _ms(proxy), _ms(raw)
        overhead = {k: round(float(p[k]) - float(d[k]), 3) for k in ("p50_ms", "p99_ms")}
        raw_overhead = {k: round(float(r[k]) - float(d[k]), 3) for k in ("p50_ms", "p99_ms")}
        return {
            "direct": d,
            "proxy": p,
            "overhead": overhead,
            "proxy_raw_client": r,
            "overhead_raw_client": raw_overhead,
            "static_get": {"path": STATIC_PATH, "httpx": _ms(httpx_get), "raw_client": _ms(raw_get)},
        }

    async def _relay(self, count: int) -> dict[str, Any]:
        """`count` concurrent streams, direct then through the proxy, in as many rounds as fill MIN_RELAY_SECONDS.

        A failure of the proxy here is a finding, not the end of the run: it is reported in the row.
        """
        self.say(f"relay: {count} stream(s) x {self.tokens} tokens, direct then proxy")
        result: dict[str, Any] = {"streams": count, "proxy": None, "ratio": None, "proxy_error": None}
        result["direct"], rounds = await self._relay_side("direct", count, 0)
        cpu_before = self.proxy.cpu_seconds()
        try:
            result["proxy"], _ = await self._relay_side("proxy", count, rounds)
        except BenchError as exc:
            result["proxy_error"] = str(exc)
            await self._wait_proxy_idle()
        else:
            cpu = self.proxy.cpu_seconds() - cpu_before
            seconds, tokens = result["proxy"]["seconds"], result["proxy"]["tokens"]
            result["proxy_cpu_seconds"] = round(cpu, 3)
            result["proxy_cpu_us_per_token"] = round(cpu / tokens * 1e6, 2) if tokens else None
            result["proxy_cpu_busy"] = round(cpu / seconds, 3)
            result["ratio"] = round(result["proxy"]["tokens_per_second"] / result["direct"]["tokens_per_second"], 3)
        result["rounds"] = rounds
        await self._clear_records()
        return result

    async def _relay_side(self, side: str, count: int, rounds: int) -> tuple[dict[str, Any], int]:
        """Batches of `count` streams: `rounds` of them, or (rounds=0) as many as fill MIN_RELAY_SECONDS."""
        tokens, seconds, done = 0, 0.0, 0
        while done < rounds or (not rounds and seconds < MIN_RELAY_SECONDS):
            started = time.perf_counter()
            samples = await self._batch(side, count, self.tokens, f"relay{count}.{done}")
            seconds += time.perf_counter() - started
            tokens += sum(s.tokens for s in samples)
            done += 1
        return {"tokens": tokens, "seconds": round(seconds, 4), "tokens_per_second": round(tokens / seconds)}, done

    async def _cancel(self) -> dict[str, Any]:
        self.say(f"cancel: {self.repeat} samples")
        samples, error = await self._collect(self._cancel_one)
        return {
            "to_lmstudio": _ms([s[0] for s in samples]) if self.sim_url else None,
            "answered": _ms([s[1] for s in samples]),
            "cancelled_event": _ms([s[2] for s in samples]),
            "error": error,
        }

    async def _cancel_one(self, i: int) -> tuple[float, float, float]:
        """Cancel a long stream after its first deltas: seconds until LM Studio got the cancel (NaN
        without the simulator), until the cancel was answered, until `response.cancelled` arrived."""
        marker = f"bench {self.run_id} cancel {i}"
        sample, changed = Sample(), asyncio.Event()
        async with _owned_tasks() as tasks:
            tasks.append(asyncio.create_task(self._proxy(f"{marker} [tokens={LONG_TOKENS}]", None, sample, changed)))
            await _until(lambda: sample.deltas >= DELTAS_BEFORE_STOP, changed, tasks, "the first deltas")
            wall, sent = time.time(), time.perf_counter()
            response = await self.http.post(f"/v1/model/response/{sample.thread_id}/cancel")
            answered = time.perf_counter() - sent
            if response.status_code != 200:
                raise BenchError(f"cancel answered {response.status_code}: {response.text[:300]}")
            async with asyncio.timeout(STEP_TIMEOUT):
                await tasks[0]
        if sample.terminal != "response.cancelled":
            raise BenchError(f"a cancelled stream ended with {sample.terminal or 'no terminal event'}")
        to_lmstudio = math.nan
        if self.sim_url:
            record = await self._record(marker, lambda r: r["cancel_received_at"] is not None)
            to_lmstudio = record["cancel_received_at"] - wall
            await self._clear_records()
        return to_lmstudio, answered, sample.terminal_at - sent

    async def _disconnect(self) -> dict[str, Any]:
        self.say(f"disconnect: {self.repeat} samples")
        to_lmstudio, error = await self._collect(self._disconnect_one)
        return {"to_lmstudio": _ms(to_lmstudio), "error": error}

    async def _collect(self, one: Callable[[int], Awaitable[T]]) -> tuple[list[T], str | None]:
        """`repeat` samples of `one(i)`; a BenchError is a finding, reported with the samples so far."""
        samples: list[T] = []
        try:
            for i in range(self.repeat):
                samples.append(await one(i))
        except BenchError as exc:
            return samples, f"after {len(samples)} samples: {exc}"
        return samples, None

    async def _disconnect_one(self, i: int) -> float:
        """Close a long stream after its first deltas: seconds until LM Studio got the cancel."""
        marker = f"bench {self.run_id} disconnect {i}"
        sample = await self._proxy(
            f"{marker} [tokens={LONG_TOKENS}]", None, close_when=lambda s: s.deltas >= DELTAS_BEFORE_STOP
        )
        if not sample.closed_wall:
            raise BenchError(f"a stream to disconnect ended with {sample.terminal or 'no terminal event'}")
        record = await self._record(marker, lambda r: r["status"] != "running")
        if record["cancel_received_at"] is None:
            raise BenchError(f"the simulator got no cancel after a disconnect: {record['status']}")
        await self._clear_records()
        return float(record["cancel_received_at"] - sample.closed_wall)

    # -- the simulator and the proxy's state -----------------------------------------------------

    async def _record(self, marker: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The simulator's record of the prediction whose prompt holds `marker`, once `ready(record)`."""
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

    async def _clear_records(self) -> None:
        if self.sim_url:
            (await self.sim.delete("/simulator/predictions")).raise_for_status()

    async def _sim_settings(self, tokens_per_second: float) -> None:
        response = await self.sim.post("/simulator/settings", json={"tokens_per_second": tokens_per_second})
        response.raise_for_status()

    async def _wait_proxy_idle(self) -> None:
        deadline = time.perf_counter() + STEP_TIMEOUT
        while (await self.http.get("/health")).json()["active_streams"]:
            if time.perf_counter() > deadline:
                raise BenchError("the proxy still has active streams")
            await asyncio.sleep(0.05)


# -- the report ------------------------------------------------------------------------------------


def _proxy_process(relay: list[dict[str, Any]], memory: dict[str, Any]) -> dict[str, Any]:
    relayed = [r for r in relay if r["proxy"] is not None]
    cpu = sum(r["proxy_cpu_seconds"] for r in relayed)
    tokens = sum(r["proxy"]["tokens"] for r in relayed)
    per_stream = (memory["active_bytes"] - memory["idle_bytes"]) / memory["streams"]
    return {
        "cpu_seconds": round(cpu, 3),
        "tokens_relayed": tokens,
        "cpu_us_per_token": round(cpu / tokens * 1e6, 2) if tokens else None,
        "rss_idle_mb": round(memory["idle_bytes"] / 2**20, 1),
        "rss_active_mb": round(memory["active_bytes"] / 2**20, 1),
        "active_streams": memory["streams"],
        "rss_per_stream_kb": round(per_stream / 1024, 1),
    }


def _checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure that has a target: its value, the target, and whether it is met (informational)."""
    checks: list[dict[str, Any]] = []

    def check(figure: str, value: float, target: str, ok: bool) -> None:
        checks.append({"figure": figure, "value": value, "target": target, "ok": ok})

    t = TARGETS
    # The proxy's own overhead is what the minimal client sees; httpx adds its own cost on top
    # (reported next to it, measured on a static endpoint), which no proxy can remove.
    o = report["ttft"]["overhead_raw_client"]
    check("TTFT overhead p50 (ms)", o["p50_ms"], "<= 2 ms", o["p50_ms"] <= t["ttft_overhead_p50_ms"])
    check("TTFT overhead p99 (ms)", o["p99_ms"], "<= 10 ms", o["p99_ms"] <= t["ttft_overhead_p99_ms"])
    for row in report["relay"]:
        target = {1: t["relay_ratio_1"], 32: t["relay_ratio_32"]}.get(row["streams"])
        if target is not None:
            check(
                f"relay at {row['streams']} stream(s), proxy/direct",
                row["ratio"],
                f">= {target:.0%}",
                row["ratio"] is not None and row["ratio"] >= target,
            )
    if report["cancel"]["to_lmstudio"] is not None:
        c = report["cancel"]["to_lmstudio"]
        check("cancel -> LM Studio p50 (ms)", c["p50_ms"], "<= 5 ms", c["p50_ms"] <= t["cancel_to_lmstudio_p50_ms"])
        check("cancel -> LM Studio p99 (ms)", c["p99_ms"], "<= 20 ms", c["p99_ms"] <= t["cancel_to_lmstudio_p99_ms"])
    if report["disconnect"] is not None:
        d = report["disconnect"]["to_lmstudio"]
        check(
            "disconnect -> LM Studio p99 (ms)",
            d["p99_ms"],
            "<= 100 ms",
            d["p99_ms"] <= t["disconnect_to_lmstudio_p99_ms"],
        )
    kb = report["proxy_process"]["rss_per_stream_kb"]
    check("RSS per active stream (KB)", kb, "<= 200 KB", kb <= t["rss_per_stream_kb"])
    return checks


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _mark(ok: bool | None) -> str:
    return "" if ok is None else ("✓" if ok else "✗")


def render(report: dict[str, Any]) -> str:
    """The report as text tables; each target's ✓/✗ is informational."""
    ok = {c["figure"]: c["ok"] for c in report["checks"]}
    s = report["setup"]
    out = [
        f"lmstudio-proxy bench against {s['lmstudio']} (model {s['model']}); {s['cpus']} CPUs, "
        f"load average {s['load_average_before']} before, {s['load_average_after']} after; {s['seconds']} s",
        f"warm-up: {s['warm_up']}",
        "",
    ]
    ttft = report["ttft"]
    out.append(
        f"Time to first token (ms; {ttft['direct']['samples']} samples each way, interleaved; through the proxy "
        "with a minimal HTTP client, which shows the proxy's own overhead, and with httpx)"
    )
    rows = []
    for q, limit in (("p50", "<= 2 ms"), ("p99", "<= 10 ms")):
        key = f"{q}_ms"
        d = ttft["direct"][key]
        p, o = ttft["proxy_raw_client"][key], ttft["overhead_raw_client"][key]
        rows.append([q, "raw client", f"{d:.2f}", f"{p:.2f}", f"{o:+.2f}", limit, _mark(ok[f"TTFT overhead {q} (ms)"])])
        p, o = ttft["proxy"][key], ttft["overhead"][key]
        rows.append([q, "httpx", f"{d:.2f}", f"{p:.2f}", f"{o:+.2f}", "", ""])
    out += _table(["", "client", "direct", "proxy", "overhead", "target", ""], rows)
    g = ttft["static_get"]
    out.append(
        f"httpx's own cost: GET {g['path']} takes {g['httpx']['p50_ms']:.2f} ms with httpx and "
        f"{g['raw_client']['p50_ms']:.2f} ms with the minimal client (p50, {g['httpx']['samples']} each)"
    )
    out += [
        "",
        f"Relay throughput (tokens/s received by all clients together; {s['tokens_per_stream']} tokens a stream)",
    ]
    rows = []
    failures: list[str] = []
    for r in report["relay"]:
        figure = f"relay at {r['streams']} stream(s), proxy/direct"
        target = {1: ">= 70 %", 32: ">= 50 %"}.get(r["streams"], "")
        if r["proxy"] is None:
            proxy_cells = ["failed", "-", target, _mark(ok.get(figure)), "-", "-"]
            failures.append(f"  {r['streams']} stream(s) through the proxy failed: {r['proxy_error']}")
        else:
            proxy_cells = [f"{r['proxy']['tokens_per_second']:,}", f"{r['ratio']:.0%}", target, _mark(ok.get(figure))]
            proxy_cells += [f"{r['proxy_cpu_us_per_token']:.1f}", f"{r['proxy_cpu_busy']:.0%}"]
        rows.append([str(r["streams"]), str(r["rounds"]), f"{r['direct']['tokens_per_second']:,}", *proxy_cells])
    out += _table(
        ["streams", "rounds", "direct tok/s", "proxy tok/s", "proxy/direct", "target", "", "proxy CPU µs/tok", "busy"],
        rows,
    )
    out += failures
    stop_pace = " at 200 tokens/s" if report["disconnect"] is not None else ""
    out += [
        "",
        f"Cancel and disconnect latency (ms, from the client's action; generation{stop_pace or ' as LM Studio runs'})",
    ]
    rows = []
    c = report["cancel"]
    if c["to_lmstudio"] is not None:
        v = c["to_lmstudio"]
        rows.append(["cancel sent -> LM Studio receives cancel", f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}"])
        rows[-1] += [str(v["samples"]), "p50 <= 5, p99 <= 20"]
        rows[-1] += [_mark(ok["cancel -> LM Studio p50 (ms)"] and ok["cancel -> LM Studio p99 (ms)"])]
    for label, key in (
        ("cancel sent -> cancel answered", "answered"),
        ("cancel sent -> response.cancelled", "cancelled_event"),
    ):
        rows.append([label, f"{c[key]['p50_ms']:.2f}", f"{c[key]['p99_ms']:.2f}", str(c[key]["samples"]), "", ""])
    if report["disconnect"] is not None:
        v = report["disconnect"]["to_lmstudio"]
        rows.append(["SSE closed -> LM Studio receives cancel", f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}"])
        rows[-1] += [str(v["samples"]), "p99 <= 100", _mark(ok["disconnect -> LM Studio p99 (ms)"])]
    out += _table(["", "p50", "p99", "samples", "target", ""], rows)
    for phase in ("cancel", "disconnect"):
        if report[phase] is not None and report[phase]["error"]:
            out.append(f"  {phase} samples stopped early, {report[phase]['error']}")
    p = report["proxy_process"]
    out += [
        "",
        "Proxy process",
        f"  CPU per relayed token   {p['cpu_us_per_token']} µs  ({p['cpu_seconds']} CPU s / "
        f"{p['tokens_relayed']:,} tokens over the proxy's relay runs)",
        f"  RSS idle                {p['rss_idle_mb']} MB",
        f"  RSS per active stream   {p['rss_per_stream_kb']} KB  ({p['active_streams']} streams mid-generation: "
        f"{p['rss_active_mb']} MB)   target <= 200 KB {_mark(ok['RSS per active stream (KB)'])}",
    ]
    if report["disconnect"] is None:
        out += ["", "(LM Studio-side cancel and disconnect timings need the simulator: run with --simulate.)"]
    return "\n".join(out)
