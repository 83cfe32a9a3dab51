"""`serve --workers N`: N processes on one port and one PostgreSQL database; refused on SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import ProxyProcess, StreamReader, UrlClients, assert_well_terminated, wait_until

from proxy.simulator import Simulator

try:
    import psycopg
except ImportError:
    if os.environ.get("CI"):  # CI installs it: there, a skip would hide a broken install
        raise
    pytest.skip("psycopg is not installed (pip install -e '.[dev]' installs it)", allow_module_level=True)

LONG_PROMPT = "Write a long story [tokens=4000]"


def _replicas(url: str) -> list[tuple[str, int]]:
    with psycopg.connect(url) as db:
        return [(r[0], int(r[1])) for r in db.execute("SELECT id, pid FROM replicas ORDER BY pid").fetchall()]


def _two_replicas(url: str) -> list[int]:
    """The pids of the two workers, once both hold a lease."""
    found: list[int] = wait_until(lambda: [pid for _, pid in _replicas(url)] if len(_replicas(url)) == 2 else [], 30)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_workers_need_postgresql(tmp_path: Path, free_port: Callable[[], int]) -> None:
    database = tmp_path / "one.sqlite3"
    command = [sys.executable, "-m", "proxy", "serve", "--workers", "2", "--database", str(database),
               "--lmstudio", "127.0.0.1:1", "--port", str(free_port())]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert done.stderr.count("\n") == 1 and "--workers needs a PostgreSQL database" in done.stderr, done.stderr
    assert not database.exists()  # refused before anything was opened


def test_workers_share_one_port_and_one_database(
    simulator_factory: Callable[..., Simulator],
    free_port: Callable[[], int],
    processes: list[ProxyProcess],
    postgres_url: str,
) -> None:
    sim = simulator_factory(tokens_per_second=40.0)
    supervisor = ProxyProcess(sim, postgres_url, free_port(), "--workers", "2")
    processes.append(supervisor)
    pids = _two_replicas(postgres_url)
    assert all(_alive(pid) for pid in pids) and supervisor.proc.pid not in pids
    # A stream and its cancel through the one port, whichever workers they reach.
    reader = StreamReader(UrlClients(supervisor.url), {"inputs": [{"role": "user", "content": LONG_PROMPT}]})
    reader.wait_deltas(1)
    with supervisor.client() as client:
        cancelled = client.post(f"/v1/model/response/{reader.thread_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
    assert assert_well_terminated(reader.join())["event"] == "response.cancelled"

    supervisor.proc.send_signal(signal.SIGTERM)
    assert supervisor.proc.wait(30) == 0
    wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=30)
    assert _replicas(postgres_url) == []  # each worker ended its lease on the way out


def test_workers_stop_when_their_supervisor_is_killed(
    simulator_factory: Callable[..., Simulator],
    free_port: Callable[[], int],
    processes: list[ProxyProcess],
    postgres_url: str,
) -> None:
    supervisor = ProxyProcess(simulator_factory(), postgres_url, free_port(), "--workers", "2")
    processes.append(supervisor)
    pids = _two_replicas(postgres_url)
    supervisor.proc.kill()
    supervisor.proc.wait(10)
    wait_until(lambda: not any(_alive(pid) for pid in pids), timeout=30)
