"""Helpers for the proxy's end-to-end tests: keys, config, the harness, SSE reading."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
from aitronos import Aitronos

from proxy import sse
from proxy.background import BackgroundServer
from proxy.config import Config
from proxy.simulator import Simulator

#: Two LM Studio hosts' catalogues (the `simulator_pair` fixture): `shared` is loaded on A and only
#: downloaded on B; `both` is loaded on both; `only-a` and `only-b` are on one each.
CATALOGUES = (["shared", "both", "only-a"], ["shared:downloaded", "both", "only-b"])

#: The smallest PNG, one transparent pixel, base64-encoded (an image input's `data`).
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

KEY = "test-key-one"
OTHER_KEY = "test-key-two"


def make_config(**sections: dict[str, Any]) -> Config:
    config = Config()
    for section, changes in sections.items():
        config = config.replace(section, **changes)
    return config


class Harness:
    """A running proxy, its simulator and its database file, with small helpers for tests."""

    def __init__(self, server: BackgroundServer, sim: Simulator, db: Path) -> None:
        self.server = server
        self.sim = sim
        self.db = db
        self.url = server.base_url
        self.closers: list[Any] = []

    def client(self, key: str | None = KEY, **kwargs: Any) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def registry_size(self) -> int:
        return len(self.server.proxy.registry.streams)


def v5(harness: Harness) -> Aitronos:
    """The v5 client over an httpx client the test closes (the SDK never closes its own)."""
    http = httpx.Client(timeout=30)
    harness.closers.append(http.close)
    return Aitronos(api_key=KEY, base_url=harness.url, httpx_client=http)


def read_events(response: httpx.Response) -> Iterator[dict[str, Any] | str]:
    """The SSE events of a streaming httpx response as they arrive (the package's own reader)."""
    reader = sse.EventReader()
    for chunk in response.iter_bytes():
        yield from reader.feed(chunk)


def stream_all(client: httpx.Client, body: dict[str, Any]) -> list[dict[str, Any] | str]:
    with client.stream("POST", "/v1/model/response", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        return list(read_events(response))


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll a condition on observable state (not a sleep-and-hope): returns its first truthy value."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached in time")
        time.sleep(interval)


def events_named(events: Sequence[dict[str, Any] | str], name: str) -> list[dict[str, Any]]:
    return [e for e in events if isinstance(e, dict) and e["event"] == name]


def deltas(events: Sequence[dict[str, Any] | str]) -> str:
    return "".join(e["delta"] for e in events_named(events, "response.content_delta"))


TERMINAL = ("response.completed", "response.error", "response.cancelled")


def assert_well_terminated(events: list[dict[str, Any] | str]) -> dict[str, Any]:
    """Exactly one terminal event, last before [DONE]; returns it."""
    assert events[-1] == "[DONE]", events[-3:]
    terminal = [e for e in events if isinstance(e, dict) and e["event"] in TERMINAL]
    assert len(terminal) == 1, terminal
    assert events[-2] is terminal[0]
    return terminal[0]


class StreamReader:
    """Streams one response in a background thread, so a test can cancel or disconnect meanwhile.

    Tests synchronise on what has arrived (`wait_for`), never on time.
    """

    def __init__(self, h: Harness | UrlClients, body: dict[str, Any], key: str = KEY) -> None:
        import threading

        self.events: list[dict[str, Any] | str] = []
        self.status = 0
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._disconnect = False
        self._done = False
        self._thread = threading.Thread(target=self._run, args=(h, {**body, "stream": True}, key), daemon=True)
        self._thread.start()

    def _run(self, h: Harness | UrlClients, body: dict[str, Any], key: str) -> None:
        try:
            with h.client(key) as client, client.stream("POST", "/v1/model/response", json=body) as response:
                self.status = response.status_code
                for event in read_events(response):
                    with self._cond:
                        self.events.append(event)
                        self._cond.notify_all()
                        if self._disconnect:
                            break
        except BaseException as exc:
            self.error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.events) or self._done, timeout):
                raise TimeoutError(f"stream condition not reached; events so far: {self.events[-3:]}")
            if not predicate(self.events):
                raise AssertionError(f"stream ended first: {self.events[-3:]} {self.error!r}")

    def wait_event(self, name: str, timeout: float = 15.0) -> dict[str, Any]:
        self.wait_for(lambda evs: events_named(evs, name), timeout)
        return events_named(self.events, name)[0]

    def wait_deltas(self, count: int) -> None:
        self.wait_for(lambda evs: len(events_named(evs, "response.content_delta")) >= count)

    @property
    def thread_id(self) -> str:
        thread_id: str = self.wait_event("response.processing")["thread_id"]
        return thread_id

    def disconnect(self) -> None:
        """Close the connection after the next event arrives (what a browser tab closing does)."""
        with self._cond:
            self._disconnect = True

    def join(self, timeout: float = 30.0) -> list[dict[str, Any] | str]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not end"
        if self.error is not None:
            raise self.error
        return self.events


def assert_consistent(h: Harness) -> None:
    """After a stream ends, whatever happened: nothing running anywhere, no orphans, no half-states."""
    import sqlite3

    wait_until(lambda: h.registry_size() == 0)
    h.sim.wait_for(lambda rs: all(r["status"] != "running" for r in rs), timeout=15)
    assert all(r["tokens_after_cancel"] == 0 for r in h.sim.predictions())
    with sqlite3.connect(h.db) as db:
        statuses = {s for (s,) in db.execute("SELECT status FROM responses")}
        assert statuses <= {"completed", "cancelled", "failed"}, statuses
        orphans = db.execute("SELECT COUNT(*) FROM messages WHERE thread_id NOT IN (SELECT id FROM threads)")
        assert orphans.fetchone()[0] == 0
        in_progress = db.execute("SELECT COUNT(*) FROM messages WHERE metadata LIKE '%\"in_progress\": true%'")
        assert in_progress.fetchone()[0] == 0
    with h.client() as client:
        threads = client.get("/v1/threads", params={"limit": 100}).json()["data"]
        assert all(t["status"] == "inactive" for t in threads)


class ProxyProcess:
    """`python -m proxy serve` in a subprocess; ready once its banner says where it listens."""

    def __init__(self, sim: Simulator, db: Path | str, port: int, *extra: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "serve",
                "--lmstudio",
                sim.host_port,
                "--port",
                str(port),
                "--database",
                str(db),
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # the banner is printed just before uvicorn binds
            if "listening on" in line:
                break
        else:
            raise AssertionError(f"the proxy exited: {self.proc.wait()}")
        # Keep reading its output: a full pipe would block the proxy inside a log write.
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self._reader.start()
        wait_until(self._answers, timeout=20)

    def _drain(self, stream: Any) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed by stop()
            for line in stream:
                self.output.append(line)

    def _answers(self) -> bool:
        try:
            return httpx.get(self.url + "/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": KEY}, timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class UrlClients:
    """Something with `.client(key)` for a proxy given by URL (a subprocess, not a Harness)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def client(self, key: str | None = KEY) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key} if key else {}, timeout=60)
