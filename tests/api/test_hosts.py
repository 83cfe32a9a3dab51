"""Several LM Studio hosts: two simulators with different catalogues behind one real proxy.

Where a request went is read from each simulator's own prediction records, never from the proxy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import CATALOGUES, KEY, StreamReader, UrlClients, assert_well_terminated, make_config, wait_until

from proxy.background import BackgroundServer
from proxy.simulator import Simulator

# A has `shared` loaded; B has it downloaded only. `both` is loaded on both; `only-*` on one.
CATALOGUE_A, CATALOGUE_B = CATALOGUES
CONFIG = make_config(lmstudio={"retry_max_seconds": 0.2})


def _prompts(records: list[dict[str, Any]]) -> list[str]:
    return [" ".join(m["text"] for m in r["history"] if m.get("role") == "user") for r in records]


def _on(sim: Simulator | SimulatorProcess, marker: str, status: str | None = None) -> list[dict[str, Any]]:
    """The predictions `sim` received whose prompt contains `marker` (and have `status`)."""
    records = sim.predictions()
    return [
        r
        for r, prompt in zip(records, _prompts(records), strict=True)
        if marker in prompt and (status is None or r["status"] == status)
    ]


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _host_up(url: str, host: str) -> float | None:
    return _metrics(url).get(("proxy_lmstudio_host_up", (("host", host),)))


def _health_hosts(client: httpx.Client) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in client.get("/health").json()["lmstudio"]["hosts"]}


def _ask(client: httpx.Client, model: str, text: str) -> httpx.Response:
    return client.post("/v1/model/response", json={"model": model, "inputs": [{"role": "user", "content": text}]})


@pytest.fixture
def two_hosts(
    tmp_path: Path, simulator_pair: tuple[Simulator, Simulator]
) -> Iterator[tuple[BackgroundServer, Simulator, Simulator]]:
    """The proxy in front of two simulators (A first in `lmstudio.hosts`)."""
    a, b = simulator_pair
    with BackgroundServer(CONFIG, lmstudio_host=[a.host_port, b.host_port], database=tmp_path / "p.db") as server:
        yield server, a, b


def test_a_request_goes_to_a_host_that_has_its_model(two_hosts: tuple[BackgroundServer, Simulator, Simulator]) -> None:
    server, a, b = two_hosts
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": KEY}, timeout=30) as client:
        models = client.get("/v1/models").json()
        ids = [m["id"] for m in models["data"]]
        assert sorted(ids) == ["both", "only-a", "only-b", "shared"]  # the union, each once
        assert {m["id"]: m["loaded"] for m in models["data"]}["shared"] is True  # loaded somewhere

        assert _ask(client, "only-b", "for-b [tokens=3]").json()["status"] == "completed"
        assert len(_on(b, "for-b")) == 1 and _on(a, "for-b") == []

        # Loaded on A, only downloaded on B: A, even though B is idle too.
        assert _ask(client, "shared", "for-shared [tokens=3]").json()["status"] == "completed"
        assert len(_on(a, "for-shared")) == 1 and _on(b, "for-shared") == []

        assert _ask(client, "only-a", "for-a [tokens=3]").json()["status"] == "completed"
        assert len(_on(a, "for-a")) == 1 and _on(b, "for-a") == []

        hosts = _health_hosts(client)
        assert set(hosts) == {a.host_port, b.host_port}
        assert all(h["state"] == "up" and h["active_streams"] == 0 for h in hosts.values())
        assert "only-b" in hosts[b.host_port]["loaded_models"] and "only-b" not in hosts[a.host_port]["loaded_models"]
        assert "shared" in hosts[b.host_port]["downloaded_models"]
        details = client.get("/v1/health/details").json()
        names = {c["name"]: c["status"] for c in details["components"]}
        assert names[f"lmstudio {a.host_port}"] == names[f"lmstudio {b.host_port}"] == "healthy"


def test_streams_spread_by_fewest_active_and_a_cancel_reaches_their_host(
    two_hosts: tuple[BackgroundServer, Simulator, Simulator],
) -> None:
    server, a, b = two_hosts
    clients = UrlClients(server.base_url)
    readers = []
    for i in range(4):  # each starts after the one before is streaming: the counts are settled
        reader = StreamReader(
            clients, {"model": "both", "inputs": [{"role": "user", "content": f"s{i} [tokens=4000]"}]}
        )
        reader.wait_deltas(1)
        readers.append(reader)
    assert len(a.predictions()) == 2 and len(b.predictions()) == 2  # not 4 on the first host
    hosts = {h["host"]: h for h in httpx.get(server.base_url + "/health").json()["lmstudio"]["hosts"]}
    assert hosts[a.host_port]["active_streams"] == hosts[b.host_port]["active_streams"] == 2
    metrics = _metrics(server.base_url)
    assert metrics[("proxy_lmstudio_host_active_streams", (("host", b.host_port),))] == 2

    # Cancel one of B's streams: the cancel reaches B, and A is not touched.
    on_b = next(i for i in range(4) if _on(b, f"s{i} "))
    with httpx.Client(base_url=server.base_url, headers={"X-API-Key": KEY}, timeout=30) as client:
        cancel = client.post(f"/v1/model/response/{readers[on_b].thread_id}/cancel")
        assert cancel.status_code == 200 and cancel.json()["cancel_mode"] == "quick_edit"
        record = b.wait_for(lambda rs: any(r["status"] == "cancelled" for r in rs))
        cancelled = [r for r in record if r["status"] == "cancelled"]
        assert len(cancelled) == 1 and f"s{on_b} " in _prompts(cancelled)[0]
        assert cancelled[0]["cancel_received_at"] is not None and cancelled[0]["tokens_after_cancel"] == 0
        assert all(r["status"] == "running" for r in a.predictions())
        assert readers[on_b].join()[-2]["event"] == "response.cancelled"  # type: ignore[index]

        # B now has one stream, A two: the next goes to B.
        fifth = StreamReader(clients, {"model": "both", "inputs": [{"role": "user", "content": "s4 [tokens=4000]"}]})
        fifth.wait_deltas(1)
        assert len(_on(b, "s4 ")) == 1 and _on(a, "s4 ") == []
        for reader in [*readers, fifth]:
            if not reader.events or reader.events[-1] != "[DONE]":
                client.post(f"/v1/model/response/{reader.thread_id}/cancel")
    for reader in [*readers, fifth]:
        assert_well_terminated(reader.join())
    for sim in (a, b):
        records = sim.wait_for(lambda rs: all(r["status"] != "running" for r in rs))
        assert all(r["tokens_after_cancel"] == 0 for r in records)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        wait_until(lambda: all(h["active_streams"] == 0 for h in _health_hosts(client).values()))


class SimulatorProcess:
    """`lmstudio-proxy simulate` in its own process, so that it can be killed with SIGKILL."""

    def __init__(self, port: int, models: list[str]) -> None:
        self.port = port
        self.host_port = f"127.0.0.1:{port}"
        args = [sys.executable, "-m", "proxy", "simulate", "--port", str(port), "--tokens-per-second", "40"]
        args += [f"--model={m}" for m in models]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        banner = self.proc.stdout.readline()
        assert "listening on" in banner, (banner, self.proc.poll())

    def predictions(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = json.loads(
            httpx.get(f"http://{self.host_port}/simulator/predictions", timeout=10).text
        )
        return records

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def test_a_host_that_dies_is_skipped_until_it_answers_again(
    tmp_path: Path, simulator_factory: Callable[..., Simulator], free_port: Callable[[], int]
) -> None:
    a = simulator_factory(models=CATALOGUE_A, tokens_per_second=40.0)
    port = free_port()
    b = SimulatorProcess(port, CATALOGUE_B)
    processes = [b]
    try:
        with (
            BackgroundServer(CONFIG, lmstudio_host=[a.host_port, b.host_port], database=tmp_path / "p.db") as server,
            httpx.Client(base_url=server.base_url, headers={"X-API-Key": KEY}, timeout=30) as client,
        ):
            clients = UrlClients(server.base_url)
            long_a = StreamReader(
                clients, {"model": "both", "inputs": [{"role": "user", "content": "la [tokens=9000]"}]}
            )
            long_a.wait_deltas(1)
            long_b = StreamReader(
                clients, {"model": "both", "inputs": [{"role": "user", "content": "lb [tokens=9000]"}]}
            )
            long_b.wait_deltas(1)
            assert len(_on(a, "la ")) == 1 and len(_on(b, "lb ")) == 1

            b.kill()  # SIGKILL: the stream on B ends with an error, the one on A goes on
            ended = assert_well_terminated(long_b.join())
            assert ended["event"] == "response.error"
            wait_until(lambda: _host_up(server.base_url, b.host_port) == 0)
            # A has a stream and B none, but B is down: A it is, and it answers.
            assert _ask(client, "both", "after-kill [tokens=3]").json()["status"] == "completed"
            assert len(_on(a, "after-kill")) == 1
            down = _ask(client, "only-b", "nowhere [tokens=3]")
            assert down.status_code == 503, down.text
            assert b.host_port in down.json()["error"]["message"]
            hosts = _health_hosts(client)
            assert hosts[b.host_port]["state"] == "down" and hosts[b.host_port]["error"]
            assert hosts[a.host_port]["state"] == "up" and hosts[a.host_port]["active_streams"] == 1
            health = client.get("/health").json()
            assert health["status"] == "degraded" and health["lmstudio"]["reachable"] is True
            assert "only-b" not in [m["id"] for m in client.get("/v1/models").json()["data"]]

            b = SimulatorProcess(port, CATALOGUE_B)  # back, on the same port
            processes.append(b)
            # /metrics asks nobody: only the background retry can bring B back here.
            wait_until(lambda: _host_up(server.base_url, b.host_port) == 1, timeout=15)
            again = StreamReader(
                clients, {"model": "both", "inputs": [{"role": "user", "content": "back [tokens=9000]"}]}
            )
            again.wait_deltas(1)
            assert len(_on(b, "back ")) == 1 and _on(a, "back ") == []  # fewest active: B again
            assert _ask(client, "only-b", "only-b-again [tokens=3]").json()["status"] == "completed"
            for reader in (long_a, again):
                assert client.post(f"/v1/model/response/{reader.thread_id}/cancel").status_code == 200
                assert_well_terminated(reader.join())
    finally:
        for process in processes:
            if process.proc.poll() is None:
                process.kill()


def test_background_server_simulates_several_hosts(tmp_path: Path) -> None:
    with BackgroundServer(simulate=2, database=tmp_path / "p.db") as server:
        assert len(server.simulators) == 2 and server.simulator is server.simulators[0]
        hosts = httpx.get(server.base_url + "/health", timeout=30).json()["lmstudio"]["hosts"]
        assert [h["host"] for h in hosts] == [s.host_port for s in server.simulators]
        assert all(h["state"] == "up" for h in hosts)
    assert all(s._threaded is None for s in server.simulators)  # stopped with the proxy
