"""Helpers for the proxy's end-to-end tests: keys, config, the harness, SSE reading."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from proxy.background import BackgroundServer
from proxy.config import Config
from proxy.simulator import Simulator

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


def read_events(response: httpx.Response) -> Iterator[dict[str, Any] | str]:
    """Parse SSE frames from a streaming httpx response as they arrive."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            yield payload if payload == "[DONE]" else json.loads(payload)


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


def events_named(events: list[dict[str, Any] | str], name: str) -> list[dict[str, Any]]:
    return [e for e in events if isinstance(e, dict) and e["event"] == name]


def deltas(events: list[dict[str, Any] | str]) -> str:
    return "".join(e["delta"] for e in events_named(events, "response.content_delta"))


TERMINAL = ("response.completed", "response.error", "response.cancelled")


def assert_well_terminated(events: list[dict[str, Any] | str]) -> dict[str, Any]:
    """Exactly one terminal event, last before [DONE]; returns it."""
    assert events[-1] == "[DONE]", events[-3:]
    terminal = [e for e in events if isinstance(e, dict) and e["event"] in TERMINAL]
    assert len(terminal) == 1, terminal
    assert events[-2] is terminal[0]
    return terminal[0]
