"""Crashes, shutdowns and LM Studio restarts, with the proxy as a real subprocess where it matters."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import KEY, Harness, ProxyProcess, StreamReader, UrlClients, make_config, wait_until

from proxy.background import BackgroundServer
from proxy.simulator import Simulator
from proxy.store import Store


def test_kill_9_mid_stream_then_restart(
    tmp_path: Path, simulator_factory: Any, free_port: Any, processes: list[ProxyProcess]
) -> None:
    sim = simulator_factory(tokens_per_second=40.0)
    db = tmp_path / "proxy.sqlite3"
    first = ProxyProcess(sim, db, free_port())
    processes.append(first)
    stream = StreamReader(UrlClients(first.url), {"inputs": [{"role": "user", "content": "crash me [tokens=2000]"}]})
    thread_id = stream.thread_id

    def checkpointed() -> str:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT content FROM messages WHERE thread_id = ? AND role = 'assistant'", (thread_id,)
            ).fetchone()
        return row[0] if row and row[0] else ""

    wait_until(checkpointed, timeout=20)
    first.proc.kill()  # SIGKILL: no cleanup of any kind
    first.proc.wait(10)
    with pytest.raises(httpx.TransportError):
        stream.join()  # the connection died with the process
    saved = checkpointed()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    second = ProxyProcess(sim, db, free_port())
    processes.append(second)
    with second.client() as client:
        messages = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[0]["content"] == "crash me [tokens=2000]"
        assert messages[1]["content"].startswith(saved) and messages[1]["metadata"]["interrupted"] is True
        assert client.get(f"/v1/threads/{thread_id}").json()["status"] == "inactive"
        usage = client.get("/v1/usage", params={"thread_id": thread_id}).json()["data"]
        assert usage[0]["status"] == "interrupted"
        again = client.post(
            "/v1/model/response",
            json={"thread_id": thread_id, "inputs": [{"role": "user", "content": "again [tokens=2]"}]},
        )
        assert again.status_code == 200 and again.json()["status"] == "completed"


def test_sigterm_with_open_streams(
    tmp_path: Path, simulator_factory: Any, free_port: Any, processes: list[ProxyProcess]
) -> None:
    sim = simulator_factory(tokens_per_second=40.0)
    db = tmp_path / "proxy.sqlite3"
    proc = ProxyProcess(sim, db, free_port())
    processes.append(proc)
    readers = [
        StreamReader(UrlClients(proc.url), {"inputs": [{"role": "user", "content": f"s{i} [tokens=2000]"}]})
        for i in range(5)
    ]
    for reader in readers:
        reader.wait_deltas(2)
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=15) == 0
    for reader in readers:
        events = reader.join()
        assert events[-1] == "[DONE]"
        assert events[-2]["event"] == "response.error" and events[-2]["code"] == "SERVER_SHUTTING_DOWN"  # type: ignore[index]
    records = sim.wait_for(lambda rs: len(rs) == 5 and all(r["status"] != "running" for r in rs))
    assert all(r["status"] == "cancelled" and r["tokens_after_cancel"] == 0 for r in records)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT content, metadata FROM messages WHERE role = 'assistant'").fetchall()
        statuses = [s for (s,) in conn.execute("SELECT status FROM responses")]
    assert len(rows) == 5 and all(content and json.loads(meta)["interrupted"] for content, meta in rows)
    assert statuses == ["cancelled"] * 5


def test_lmstudio_restarted_while_the_proxy_runs(make_harness: Any, free_port: Any) -> None:
    port = free_port()
    sim = Simulator(port=port, tokens_per_second=0.0).start()
    h: Harness = make_harness(sim=sim)
    with h.client() as client:
        ok = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "1 [tokens=2]"}]})
        assert ok.status_code == 200
        sim.stop()
        for _ in range(2):
            down = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "2"}]})
            assert down.status_code == 503 and down.json()["error"]["code"] == "MODEL_BACKEND_UNAVAILABLE"
        with Simulator(port=port, tokens_per_second=0.0):
            back = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "3 [tokens=2]"}]})
            assert back.status_code == 200 and back.json()["status"] == "completed"
        threads = client.get("/v1/threads").json()["data"]
        assert len(threads) == 2  # the refused requests stored nothing


@pytest.mark.parametrize("loaded", [True, False], ids=["model-loaded", "model-not-loaded"])
def test_a_stream_during_an_outage_is_a_503_that_stores_nothing(
    make_harness: Any, free_port: Any, loaded: bool
) -> None:
    port = free_port()
    sim = Simulator(port=port, tokens_per_second=0.0).start()
    h: Harness = make_harness(sim=sim)
    with h.client() as client:
        if loaded:  # the proxy holds a handle for the model: the prediction itself fails
            assert client.post("/v1/model/response", json={"inputs": [{"content": "1 [tokens=2]"}]}).status_code == 200
        else:
            assert client.get("/v1/models").status_code == 200  # names cached, nothing loaded through the proxy
        before = client.get("/v1/threads").json()["data"]
        sim.stop()
        body = {"inputs": [{"content": "2"}], "stream": True}
        with client.stream("POST", "/v1/model/response", json=body) as down:
            assert down.status_code == 503, down.read()
            assert down.headers["content-type"].startswith("application/json")
            assert down.read() and down.json()["error"]["code"] == "MODEL_BACKEND_UNAVAILABLE"
        assert client.get("/v1/threads").json()["data"] == before


def test_wal_checkpoints_run_in_the_background(harness: Harness, tmp_path: Path) -> None:
    # SQLite's automatic checkpoint would fsync inside some request's commit; the proxy turns
    # it off and checkpoints from a worker thread instead. A few small writes never reach the
    # automatic threshold, so the data shows up in the main file only by the background path.
    with harness.client() as client:
        reply = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "hi [tokens=3]"}]})
        thread_id = reply.json()["thread_id"]

    def in_main_file() -> bool:
        copy = tmp_path / "main-file-only.sqlite3"
        shutil.copyfile(harness.db, copy)  # without the -wal file beside it
        try:
            with contextlib.closing(sqlite3.connect(copy)) as db:
                return db.execute("SELECT 1 FROM threads WHERE id = ?", (thread_id,)).fetchone() is not None
        except sqlite3.DatabaseError:  # copied mid-checkpoint; look again
            return False

    wait_until(in_main_file, timeout=10)
    assert Store(":memory:").checkpoint_in_background() is False


def test_idle_connections_outlive_client_pools(
    harness: Harness, tmp_path: Path, simulator_factory: Any, free_port: Any, processes: list[ProxyProcess]
) -> None:
    # uvicorn's default (5 s) equals httpx's pool expiry (5 s): a client could reuse a
    # connection just as the server closes it, and a POST would fail with a ReadError.
    assert harness.server._threaded.server.config.timeout_keep_alive == 75  # type: ignore[union-attr]  # the default
    config = tmp_path / "short.toml"
    config.write_text("[server]\nkeep_alive_seconds = 1\n")
    proc = ProxyProcess(simulator_factory(), tmp_path / "db.sqlite3", free_port(), "--config", str(config))
    processes.append(proc)
    with socket.create_connection(("127.0.0.1", proc.port), timeout=30) as sock:
        request = f"GET /v1/model/response/output-modes HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {KEY}\r\n\r\n"
        sock.sendall(request.encode())
        received = b""
        while b"output_modes" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200")
        sock.settimeout(3)  # the configured 1 s, not uvicorn's 5 s, or this raises TimeoutError
        while sock.recv(65536):  # until the proxy closes the idle connection
            pass


def test_a_second_proxy_on_the_database_leaves_running_responses_alone(make_harness: Any) -> None:
    # e.g. `lmstudio-proxy serve` in a terminal and serve_in_background() in a notebook, both
    # on the default database: starting the second must not take the first's live stream for
    # a crash's leftovers (crash recovery itself is test_kill_9_mid_stream_then_restart).
    h: Harness = make_harness(make_config(cancel={"quick_edit_seconds": 0.0}), tokens_per_second=40.0)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": "long [tokens=400]"}]})
    reader.wait_deltas(2)
    with BackgroundServer(make_config(), lmstudio_host=h.sim.host_port, database=h.db):
        with sqlite3.connect(h.db) as conn:
            assert conn.execute("SELECT status FROM responses").fetchall() == [("in_progress",)]
        with h.client() as client:
            client.post(f"/v1/model/response/{reader.thread_id}/cancel").raise_for_status()
    assert reader.join()[-2]["event"] == "response.cancelled"  # type: ignore[index]
    with sqlite3.connect(h.db) as conn:
        meta = conn.execute("SELECT metadata FROM messages WHERE role = 'assistant'").fetchone()[0]
    assert "interrupted" not in json.loads(meta)
