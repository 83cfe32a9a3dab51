"""Fixtures for the proxy's end-to-end tests: a real uvicorn server, the simulator, real clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp_server import McpTestServer
from support import CATALOGUES, Harness, ProxyProcess, make_config

from proxy.background import BackgroundServer
from proxy.config import Config
from proxy.simulator import Simulator


@pytest.fixture
def make_harness(tmp_path: Path, simulator_factory: Callable[..., Simulator]) -> Iterator[Callable[..., Harness]]:
    servers: list[BackgroundServer] = []
    harnesses: list[Harness] = []

    def make(
        config: Config | None = None,
        sim: Simulator | None = None,
        socket_options: list[tuple[int, int, int]] | None = None,
        **sim_options: Any,
    ) -> Harness:
        sim = sim or simulator_factory(**sim_options)
        db = tmp_path / f"proxy{len(servers)}.sqlite3"
        server = BackgroundServer(
            config or make_config(), lmstudio_host=sim.host_port, database=db, socket_options=socket_options
        ).start()
        servers.append(server)
        harnesses.append(Harness(server, sim, db))
        return harnesses[-1]

    yield make
    for harness in harnesses:
        for close in harness.closers:
            close()
    for server in servers:
        server.stop()


@pytest.fixture
def simulator_pair(simulator_factory: Callable[..., Simulator]) -> tuple[Simulator, Simulator]:
    """Two simulators on their own loopback ports with different catalogues (`support.CATALOGUES`),
    at 40 tokens/s: long answers run long enough to be watched, cancelled or cut off."""
    a, b = (simulator_factory(models=models, tokens_per_second=40.0) for models in CATALOGUES)
    return a, b


@pytest.fixture
def harness(make_harness: Callable[..., Harness]) -> Harness:
    return make_harness()


@pytest.fixture
def processes() -> Iterator[list[ProxyProcess]]:
    started: list[ProxyProcess] = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture
def mcp_server(free_port: Callable[[], int]) -> Iterator[McpTestServer]:
    """A real MCP server (streamable HTTP) on a loopback port, stopped after the test."""
    server = McpTestServer(free_port()).start()
    yield server
    server.stop()
