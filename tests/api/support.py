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
