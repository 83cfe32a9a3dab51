"""The proxy served by uvicorn (`serve --database postgresql://…`) on a real PostgreSQL: a stream,
its cancel and the thread read back; a crash and the restart that recovers its partial answer."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import KEY, ProxyProcess, StreamReader, UrlClients, assert_well_terminated, deltas, wait_until

from proxy.simulator import Simulator

try:
    import psycopg
except ImportError:
    if os.environ.get("CI"):  # CI installs it: there, a skip would hide a broken install
        raise
    pytest.skip("psycopg is not installed (pip install -e '.[dev]' installs it)", allow_module_level=True)

LONG = "Write a long story [tokens=2000]"
# Trust authentication ignores the password; it is there to prove it is never shown.
PASSWORD = "never-shown-s3cret"


def with_password(url: str) -> str:
    return url.replace("postgresql://proxy_test@", f"postgresql://proxy_test:{PASSWORD}@")


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as db:
        return db.execute(sql).fetchall()


def test_stream_cancel_and_messages_on_postgresql(
    tmp_path: Path,
    simulator_factory: Any,
    free_port: Any,
    processes: list[ProxyProcess],
    postgres_url: str,
) -> None:
    sim: Simulator = simulator_factory(tokens_per_second=40.0)
    config = tmp_path / "config.toml"
    config.write_text("[cancel]\nquick_edit_seconds = 0.5\n")
    proc = ProxyProcess(sim, with_password(postgres_url), free_port(), "--config", str(config))
    processes.append(proc)
    shown = postgres_url.replace("postgresql://proxy_test@", "postgresql://proxy_test:***@")
    with proc.client() as client:
        first = client.post("/v1/model/response", json={"inputs": [{"role": "user", "content": "hi [tokens=3]"}]})
        assert first.status_code == 200 and first.json()["status"] == "completed", first.text
        thread_id = first.json()["thread_id"]

        reader = StreamReader(
            UrlClients(proc.url), {"thread_id": thread_id, "inputs": [{"role": "user", "content": LONG}]}
        )
        wait_until(
            lambda: any(
                s["thread_id"] == thread_id and s["cancel_mode_now"] == "keep_partial" and s["partial_content_length"]
                for s in client.get("/v1/model/response/active").json()["data"]
            )
        )
        cancelled = client.post(f"/v1/model/response/{thread_id}/cancel")
        assert cancelled.status_code == 200
        body = cancelled.json()
        assert body["cancel_mode"] == "keep_partial" and body["partial_content_saved"] is True
        assert client.post(f"/v1/model/response/{thread_id}/cancel").json() == body  # repeated: the first answer
        events = reader.join()
        assert assert_well_terminated(events)["event"] == "response.cancelled"
        seen = deltas(events)

        messages = client.get(f"/v1/threads/{thread_id}/messages", params={"order": "asc"}).json()["data"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "hi [tokens=3]"),
            ("assistant", first.json()["response"]),
            ("user", LONG),
            ("assistant", seen),
        ]
        assert messages[3]["metadata"]["cancelled"] is True and messages[3]["metadata"]["cancel_mode"] == "keep_partial"
        assert client.get(f"/v1/threads/{thread_id}").json()["status"] == "inactive"

        details = client.get("/v1/health/details").json()["components"]
        assert {"name": "database", "status": "healthy", "details": shown} in details
    # What the API showed is what PostgreSQL holds.
    assert _rows(postgres_url, "SELECT status, cancel_mode FROM responses ORDER BY seq") == [
        ("completed", None),
        ("cancelled", "keep_partial"),
    ]
    wait_until(lambda: any(f"database:  {shown}" in line for line in proc.output), timeout=10)
    assert not any(PASSWORD in line for line in proc.output)


def test_kill_9_then_restart_recovers_the_partial_answer_on_postgresql(
    tmp_path: Path, simulator_factory: Any, free_port: Any, processes: list[ProxyProcess], postgres_url: str
) -> None:
    sim: Simulator = simulator_factory(tokens_per_second=40.0)
    config = tmp_path / "config.toml"
    config.write_text("[replicas]\nlease_seconds = 1.0\n")  # the dead one's lease runs out a second after
    first = ProxyProcess(sim, postgres_url, free_port(), "--config", str(config))
    processes.append(first)
    stream = StreamReader(UrlClients(first.url), {"inputs": [{"role": "user", "content": "crash me [tokens=2000]"}]})
    thread_id = stream.thread_id

    def checkpointed() -> str:
        rows = _rows(
            postgres_url, f"SELECT content FROM messages WHERE thread_id = '{thread_id}' AND role = 'assistant'"
        )
        return str(rows[0][0]) if rows and rows[0][0] else ""

    wait_until(checkpointed, timeout=20)
    first.proc.kill()  # SIGKILL: its lease is no longer renewed
    first.proc.wait(10)
    with pytest.raises(httpx.TransportError):
        stream.join()
    saved = checkpointed()

    second = ProxyProcess(sim, postgres_url, free_port(), "--config", str(config))
    processes.append(second)
    with second.client() as client:

        def recovered() -> list[dict[str, Any]]:
            found = client.get(f"/v1/threads/{thread_id}/messages", params={"order": "asc"}).json()["data"]
            return found if len(found) == 2 and "interrupted" in found[1]["metadata"] else []

        messages = wait_until(recovered, timeout=15)
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[1]["content"].startswith(saved) and messages[1]["metadata"]["interrupted"] is True
        usage = client.get("/v1/usage", params={"thread_id": thread_id}).json()["data"]
        assert usage[0]["status"] == "interrupted"
        again = client.post(
            "/v1/model/response",
            headers={"X-API-Key": KEY},
            json={"thread_id": thread_id, "inputs": [{"role": "user", "content": "again [tokens=2]"}]},
        )
        assert again.status_code == 200 and again.json()["status"] == "completed"
    metadata = _rows(postgres_url, "SELECT metadata FROM messages WHERE role = 'assistant' ORDER BY seq")
    assert json.loads(metadata[0][0])["interrupted"] is True
