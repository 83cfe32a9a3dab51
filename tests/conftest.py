"""Shared fixtures: the LM Studio simulator on a real loopback port, and free ports."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from proxy.simulator import Simulator

# Fast defaults: tokens as fast as possible, near-instant loads and prompt processing.
FAST = {"tokens_per_second": 0.0, "load_seconds": 0.05, "prompt_seconds": 0.0}


class _ErrorCollector(logging.Handler):
    """Collects ERROR records from the simulator's server (exceptions inside it never reach pytest)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def simulator_factory() -> Iterator[Callable[..., Simulator]]:
    """Start simulators with custom options (fast by default); all are stopped at teardown, and any
    error logged inside them fails the test."""
    started: list[Simulator] = []
    collector = _ErrorCollector()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "proxy.simulator")]
    for logger in loggers:
        logger.addHandler(collector)

    def start(**options: Any) -> Simulator:
        sim = Simulator(**{**FAST, **options}).start()
        started.append(sim)
        return sim

    try:
        yield start
    finally:
        for sim in started:
            sim.stop()
        for logger in loggers:
            logger.removeHandler(collector)
    errors = [collector.format(r) for r in collector.records]
    assert not errors, f"the simulator logged errors: {errors}"


@pytest.fixture
def simulator(simulator_factory: Callable[..., Simulator]) -> Simulator:
    """A started simulator with the default models, generating as fast as possible."""
    return simulator_factory()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Returns a function giving a currently free loopback port (for subprocesses that need --port)."""
    return _free_port
