"""Three proxies (`serve` subprocesses) on one real PostgreSQL in front of the simulator: any replica
cancels any stream (both modes, repeated, concurrent), the 409 holds across replicas, a replica
killed with -9 has its running responses recovered by another, and a dropped LISTEN connection
loses no cancel."""

from __future__ import annotations

import concurrent.futures
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support import ProxyProcess, StreamReader, UrlClients, assert_well_terminated, deltas, events_named, wait_until

from proxy.engines import LISTEN_APPLICATION
from proxy.simulator import Simulator

try:
    import psycopg
except ImportError:
    if os.environ.get("CI"):  # CI installs it: there, a skip would hide a broken install
        raise
    pytest.skip("psycopg is not installed (pip install -e '.[dev]' installs it)", allow_module_level=True)

LONG = "Write a long story [tokens=4000]"


def _rows(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(sql, args)
        return cursor.fetchall() if cursor.description is not None else []


@dataclass
class Cluster:
    sim: Simulator
    replicas: list[ProxyProcess]
    url: str  # the database

    def stream(self, replica: int, body: dict[str, Any]) -> StreamReader:
        return StreamReader(UrlClients(self.replicas[replica].url), body)

    def post(self, replica: int, path: str) -> Any:
        with self.replicas[replica].client() as client:
            return client.post(path)

    def get(self, replica: int, path: str, **params: Any) -> Any:
        with self.replicas[replica].client() as client:
            response = client.get(path, params=params)
            assert response.status_code == 200, response.text
            return response.json()

    def active(self, replica: int) -> dict[str, dict[str, Any]]:
        return {s["thread_id"]: s for s in self.get(replica, "/v1/model/response/active")["data"]}

    def listeners(self) -> list[int]:
        sql = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
        rows = _rows(self.url.rsplit("/", 1)[0] + "/postgres", sql, (LISTEN_APPLICATION,))
        return sorted(pid for (pid,) in rows)


@pytest.fixture
def cluster(
    tmp_path: Path,
    simulator_factory: Callable[..., Simulator],
    free_port: Callable[[], int],
    processes: list[ProxyProcess],
    postgres_url: str,
) -> Iterator[Callable[..., Cluster]]:
    """Start N replicas (3 by default) with a config file's text, on one database and one simulator."""

    def start(config: str, n: int = 3) -> Cluster:
        sim = simulator_factory(tokens_per_second=40.0)
        path = tmp_path / "config.toml"
        path.write_text(config)
        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            started = list(
                pool.map(lambda _: ProxyProcess(sim, postgres_url, free_port(), "--config", str(path)), range(n))
            )
        processes.extend(started)
        return Cluster(sim, started, postgres_url)

    yield start


def _no_tokens_after_cancel(sim: Simulator) -> None:
    predictions = sim.wait_for(lambda rs: all(r["status"] != "running" for r in rs), timeout=15)
    assert predictions and all(r["tokens_after_cancel"] == 0 for r in predictions), predictions


def test_any_replica_cancels_any_stream(cluster: Callable[..., Cluster]) -> None:
    c = cluster("[cancel]\nquick_edit_seconds = 3.0\n")
    readers = [c.stream(i, {"inputs": [{"role": "user", "content": LONG}]}) for i in range(3)]
    for reader in readers:
        reader.wait_deltas(1)
    a, b, d = (r.thread_id for r in readers)  # streaming on replicas 0, 1 and 2

    # Every replica sees every stream, and every thread as streaming.
    for replica in range(3):
        assert set(c.active(replica)) == {a, b, d}
        assert all(c.get(replica, f"/v1/threads/{t}")["status"] == "streaming" for t in (a, b, d))
    listed = {t["id"]: t["status"] for t in c.get(1, "/v1/threads", limit=10)["data"]}
    assert listed == {a: "streaming", b: "streaming", d: "streaming"}

    # One running stream per thread, across replicas: the 409, from a replica that does not run it.
    with c.replicas[1].client() as client:
        busy = client.post("/v1/model/response", json={"thread_id": a, "inputs": [{"role": "user", "content": "x"}]})
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "STREAM_ALREADY_ACTIVE", busy.text
        assert client.delete(f"/v1/threads/{a}").status_code == 409

    # quick_edit, from another replica than the one streaming (replica 1 streams b).
    quick = c.post(2, f"/v1/model/response/{b}/cancel")
    assert quick.status_code == 200, quick.text
    assert quick.json()["cancel_mode"] == "quick_edit" and quick.json()["user_message_deleted"] is True
    assert quick.json()["elapsed_seconds"] < 3.0
    assert c.post(0, f"/v1/model/response/{b}/cancel").json() == quick.json()  # repeated, on a third replica

    # keep_partial, once the database's clock says so (replica 2 streams d), cancelled from replica 0.
    wait_until(lambda: c.active(1).get(d, {}).get("cancel_mode_now") == "keep_partial", timeout=15)
    kept = c.post(0, f"/v1/model/response/{d}/cancel")
    assert kept.status_code == 200 and kept.json()["cancel_mode"] == "keep_partial", kept.text
    assert kept.json()["partial_content_saved"] is True and kept.json()["elapsed_seconds"] >= 3.0
    assert c.post(1, f"/v1/model/response/{d}/cancel").json() == kept.json()

    # Two replicas cancel one stream (replica 0 streams a) at the same time: one answer for both.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        both = list(pool.map(lambda replica: c.post(replica, f"/v1/model/response/{a}/cancel"), (1, 2)))
    assert [r.status_code for r in both] == [200, 200] and both[0].json() == both[1].json(), [r.text for r in both]
    assert c.post(0, f"/v1/model/response/{a}/cancel").json() == both[0].json()

    streams = [r.join() for r in readers]
    for events in streams:
        assert assert_well_terminated(events)["event"] == "response.cancelled"
    assert events_named(streams[1], "response.cancelled")[0]["cancel_mode"] == "quick_edit"

    # The store was committed before each answer: what the cancels said is what the database holds.
    assert _rows(c.url, "SELECT COUNT(*) FROM threads WHERE id = %s", (b,)) == [(0,)]  # quick_edit: gone
    messages = c.get(1, f"/v1/threads/{d}/messages", order="asc")["data"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", LONG), ("assistant", deltas(streams[2]))]
    assert messages[1]["metadata"]["cancel_mode"] == "keep_partial"
    statuses = dict(_rows(c.url, "SELECT thread_id, cancel_mode FROM responses WHERE status = 'cancelled'"))
    assert statuses == {a: both[0].json()["cancel_mode"], b: "quick_edit", d: "keep_partial"}
    for replica in range(3):
        assert c.active(replica) == {}
        assert c.get(replica, f"/v1/threads/{a}")["status"] == "inactive"
    _no_tokens_after_cancel(c.sim)
    # After the stop, the thread takes a new response on any replica.
    with c.replicas[2].client() as client:
        again = client.post("/v1/model/response", json={"thread_id": a, "inputs": [{"role": "user", "content": "hi"}]})
        assert again.status_code == 200 and again.json()["status"] == "completed", again.text


def test_a_cancel_after_a_disconnect_applies_its_mode_on_another_replica(cluster: Callable[..., Cluster]) -> None:
    c = cluster("[cancel]\nquick_edit_seconds = 30.0\n", n=2)
    reader = c.stream(0, {"inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(1)
    thread_id = reader.thread_id
    reader.disconnect()  # as the seed's Stop button: close the stream, then cancel
    reader.join()
    wait_until(lambda: _rows(c.url, "SELECT status FROM responses") == [("cancelled",)])
    late = c.post(1, f"/v1/model/response/{thread_id}/cancel")
    assert late.status_code == 200 and late.json()["cancel_mode"] == "quick_edit", late.text
    assert c.post(0, f"/v1/model/response/{thread_id}/cancel").json() == late.json()
    assert _rows(c.url, "SELECT COUNT(*) FROM messages") == [(0,)]  # quick_edit: the turn is gone
    _no_tokens_after_cancel(c.sim)


def test_a_replica_killed_mid_stream_is_recovered_by_another(cluster: Callable[..., Cluster]) -> None:
    c = cluster("[cancel]\nquick_edit_seconds = 0.0\n[replicas]\nlease_seconds = 1.0\n")
    left = c.stream(0, {"inputs": [{"role": "user", "content": "left running [tokens=4000]"}]})
    asked = c.stream(0, {"inputs": [{"role": "user", "content": "cancelled while dead [tokens=4000]"}]})
    left_id, asked_id = left.thread_id, asked.thread_id

    def checkpointed(thread_id: str) -> str:
        sql = "SELECT content FROM messages WHERE thread_id = %s AND role = 'assistant'"
        rows = _rows(c.url, sql, (thread_id,))
        return str(rows[0][0]) if rows and rows[0][0] else ""

    wait_until(lambda: checkpointed(left_id) and checkpointed(asked_id), timeout=20)
    c.replicas[0].proc.kill()
    c.replicas[0].proc.wait(10)
    saved = checkpointed(left_id), checkpointed(asked_id)
    assert set(c.active(1)) == {left_id, asked_id}  # still running for the others, until the lease runs out

    # A cancel for the dead replica's stream waits for its lease, then ends the response itself.
    cancelled = c.post(2, f"/v1/model/response/{asked_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["cancel_mode"] == "keep_partial", cancelled.text
    asked_messages = c.get(1, f"/v1/threads/{asked_id}/messages", order="asc")["data"]
    assert asked_messages[1]["content"] == saved[1]
    assert asked_messages[1]["metadata"]["cancel_mode"] == "keep_partial"
    assert asked_messages[1]["metadata"]["interrupted"] is True

    def recovered() -> list[dict[str, Any]]:
        found = c.get(1, f"/v1/threads/{left_id}/messages", order="asc")["data"]
        return found if len(found) == 2 and found[1]["metadata"].get("interrupted") else []

    left_messages = wait_until(recovered, timeout=15)
    assert left_messages[1]["content"] == saved[0] and left_messages[1]["metadata"]["in_progress"] is False
    usage = {u["thread_id"]: u["status"] for u in c.get(2, "/v1/usage")["data"]}
    assert usage == {left_id: "interrupted", asked_id: "cancelled"}
    assert c.active(1) == {} and c.get(2, f"/v1/threads/{left_id}")["status"] == "inactive"
    # Nothing accepted is lost, and the thread takes a new response.
    with c.replicas[1].client() as client:
        again = client.post(
            "/v1/model/response", json={"thread_id": left_id, "inputs": [{"role": "user", "content": "go"}]}
        )
        assert again.status_code == 200 and again.json()["status"] == "completed", again.text
    roles = [m["role"] for m in c.get(2, f"/v1/threads/{left_id}/messages", order="asc")["data"]]
    assert roles == ["user", "assistant", "user", "assistant"]


def _admin(c: Cluster, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """On the cluster's `postgres` database: works while the test's database refuses connections."""
    return _rows(c.url.rsplit("/", 1)[0] + "/postgres", sql, args)


def _terminate_listeners(c: Cluster) -> list[int]:
    before = c.listeners()
    assert len(before) == len(c.replicas), before
    _admin(
        c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (LISTEN_APPLICATION,)
    )
    return before


def test_a_lost_notification_loses_no_cancel(cluster: Callable[..., Cluster]) -> None:
    c = cluster("[cancel]\nquick_edit_seconds = 0.0\n", n=2)
    reader = c.stream(0, {"inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(1)
    # The LISTEN connections are killed and cannot come back (the database takes no new
    # connections; the replicas' own stay): the cancel's NOTIFY reaches nobody, polling must find it.
    database = c.url.rsplit("/", 1)[1]
    _admin(c, f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false')
    try:
        _terminate_listeners(c)
        wait_until(lambda: not _admin(c, "SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                                      (LISTEN_APPLICATION,)))  # fmt: skip
        started = time.monotonic()
        cancelled = c.post(1, f"/v1/model/response/{reader.thread_id}/cancel")
        took = time.monotonic() - started
    finally:
        _admin(c, f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true')
    assert cancelled.status_code == 200 and cancelled.json()["cancel_mode"] == "keep_partial", cancelled.text
    assert took < 1.0, took
    assert assert_well_terminated(reader.join())["event"] == "response.cancelled"
    _no_tokens_after_cancel(c.sim)


def test_the_listen_connection_comes_back_after_it_is_killed(cluster: Callable[..., Cluster]) -> None:
    # Polling every 5 s: a cancel that answers well within that was woken by a notification.
    c = cluster("[cancel]\nquick_edit_seconds = 0.0\n[replicas]\npoll_seconds = 5.0\n", n=2)
    before = _terminate_listeners(c)
    wait_until(lambda: len(after := c.listeners()) == 2 and not set(after) & set(before), timeout=10)
    reader = c.stream(0, {"inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(1)
    started = time.monotonic()
    cancelled = c.post(1, f"/v1/model/response/{reader.thread_id}/cancel")
    took = time.monotonic() - started
    assert cancelled.status_code == 200, cancelled.text
    assert took < 2.5, took
    events = reader.join()
    assert assert_well_terminated(events)["event"] == "response.cancelled"
    body = json.loads(_rows(c.url, "SELECT cancel_body FROM responses")[0][0])
    assert body == cancelled.json()
    _no_tokens_after_cancel(c.sim)


def test_three_replicas_in_front_of_two_simulators(
    simulator_factory: Callable[..., Simulator],
    free_port: Callable[[], int],
    processes: list[ProxyProcess],
    postgres_url: str,
) -> None:
    """Issue 17's whole picture: streams on every replica spread over two LM Studio hosts, a cancel
    sent to another replica reaches the host that runs the stream, and a host that dies is skipped."""
    a, b = simulator_factory(tokens_per_second=40.0), simulator_factory(tokens_per_second=40.0)
    hosts = f"{a.host_port},{b.host_port}"
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        replicas = list(pool.map(lambda _: ProxyProcess(a, postgres_url, free_port(), "--lmstudio", hosts), range(3)))
    processes.extend(replicas)
    readers = [StreamReader(UrlClients(r.url), {"inputs": [{"role": "user", "content": LONG}]}) for r in replicas]
    readers += [StreamReader(UrlClients(replicas[0].url), {"inputs": [{"role": "user", "content": LONG}]})]
    for reader in readers:
        reader.wait_deltas(1)
    # Replica 0 ran two streams at once: fewest active streams put them on different hosts.
    assert len(a.predictions()) >= 1 and len(b.predictions()) >= 1

    # Each stream is cancelled through the next replica, not the one it runs on.
    for i, reader in enumerate(readers):
        with replicas[(i + 1) % 3].client() as client:
            answer = client.post(f"/v1/model/response/{reader.thread_id}/cancel")
        assert answer.status_code == 200 and answer.json()["cancel_mode"] == "quick_edit", answer.text
        assert assert_well_terminated(reader.join())["event"] == "response.cancelled"
    for sim in (a, b):
        _no_tokens_after_cancel(sim)

    b.stop()  # one LM Studio host goes away: every replica goes on with the other
    before = len(a.predictions())
    for replica in replicas:
        with replica.client() as client:
            answer = client.post("/v1/model/response", json={"inputs": [{"content": "still there? [tokens=3]"}]})
        assert answer.status_code == 200 and answer.json()["status"] == "completed", answer.text
    assert len(a.predictions()) == before + 3
