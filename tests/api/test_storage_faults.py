"""Storage faults while serving: immutable files, a deleted database, a full disk.

A fault is a 503 STORAGE_UNAVAILABLE (nothing accepted), never a crash, a 500 or a silent loss.
The proxy runs as a subprocess where a fault could kill it (SIGBUS would take pytest down too).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import (
    KEY,
    Harness,
    ProxyProcess,
    StreamReader,
    UrlClients,
    assert_well_terminated,
    deltas,
    make_config,
    wait_until,
)

from proxy.background import BackgroundServer

DB_FILES = ("", "-wal", "-shm")


def _assert_storage_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text[:500]
    error = response.json()["error"]
    assert (error["code"], error["type"], error["status"]) == ("STORAGE_UNAVAILABLE", "server_error", 503)
    assert error["trace_id"] == response.headers["x-request-id"]


def _chattr(flag: str, *paths: Path) -> None:
    subprocess.run(["chattr", flag, *map(str, paths)], check=True, capture_output=True)


@pytest.fixture
def immutable_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory whose files can be made immutable (ext4 and the like, as root); skips otherwise."""
    probe = tmp_path / "probe"
    probe.touch()
    try:
        _chattr("+i", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"chattr +i does not work here (needs root and a filesystem with inode flags): {exc}")
    _chattr("-i", probe)
    yield tmp_path
    for path in tmp_path.iterdir():  # never leave an undeletable file behind
        with contextlib.suppress(subprocess.CalledProcessError):
            _chattr("-i", path)


def test_immutable_files_mid_stream_are_503_not_sigbus(
    immutable_dir: Path, simulator_factory: Any, free_port: Any, processes: list[ProxyProcess]
) -> None:
    # SQLite writes its -shm file through a shared memory map; on a file made immutable, that
    # write is SIGBUS, which killed the proxy and cut every stream with no terminal event.
    db = immutable_dir / "proxy.sqlite3"
    proc = ProxyProcess(simulator_factory(tokens_per_second=40.0), db, free_port())
    processes.append(proc)
    with proc.client() as client:
        kept = client.post("/v1/threads", json={"title": "before"}).json()["id"]
    reader = StreamReader(UrlClients(proc.url), {"inputs": [{"role": "user", "content": "long [tokens=120]"}]})
    reader.wait_deltas(3)
    _chattr("+i", *(Path(f"{db}{suffix}") for suffix in DB_FILES))
    with proc.client() as client:
        _assert_storage_unavailable(client.post("/v1/threads", json={"title": "refused"}))
        _assert_storage_unavailable(client.get("/v1/threads"))
    events = reader.join()  # LM Studio finishes; the outcome cannot be written, and the client is told
    assert assert_well_terminated(events)["event"] == "response.error"
    assert proc.proc.poll() is None, "the proxy died"
    _chattr("-i", *(Path(f"{db}{suffix}") for suffix in DB_FILES))
    with proc.client() as client:  # the storage is back: so is the proxy, and the outcome kept meanwhile
        assert client.get(f"/v1/threads/{kept}").status_code == 200
        assert client.post("/v1/threads", json={"title": "after"}).status_code == 201
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(30) == 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (text,) = conn.execute("SELECT content FROM messages WHERE role = 'assistant'").fetchone()
        statuses = [s for (s,) in conn.execute("SELECT status FROM responses")]
    assert text == deltas(events) and statuses == ["completed"]


def test_deleted_database_is_refused_not_silently_lost(make_harness: Any, caplog: pytest.LogCaptureFixture) -> None:
    # Deleting the files under a running proxy left it answering 200 to writes that lived only
    # in deleted files, and the background checkpoint made a new, empty database at the path.
    h: Harness = make_harness()
    with h.client() as client:
        acknowledged = [client.post("/v1/threads", json={"title": f"t{i}"}).json()["id"] for i in range(8)]
        for suffix in DB_FILES:
            Path(f"{h.db}{suffix}").unlink()
        with caplog.at_level(logging.ERROR, logger="proxy.store"):
            _assert_storage_unavailable(client.post("/v1/threads", json={"title": "lost?"}))
        _assert_storage_unavailable(client.get("/v1/threads"))
    assert any("deleted" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    h.server.stop()
    with (
        BackgroundServer(make_config(), lmstudio_host=h.sim.host_port, database=h.db) as again,
        httpx.Client(base_url=again.base_url, headers={"X-API-Key": KEY}) as client,
    ):
        found = {t["id"] for t in client.get("/v1/threads", params={"limit": 100}).json()["data"]}
    assert found == set(acknowledged)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs, to fill for real; skips where mounting is not allowed."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {exc}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> None:
    with (directory / "filler").open("ab") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()


def test_disk_full_refuses_new_work_and_records_running_streams(
    small_disk: Path, simulator_factory: Any, free_port: Any, processes: list[ProxyProcess]
) -> None:
    # A full disk gave new requests a 500, and a failed checkpoint aborted a stream LM Studio
    # could finish, leaving its row in_progress after a clean stop.
    db = small_disk / "proxy.sqlite3"
    config = small_disk.parent / "disk.toml"
    config.write_text("[database]\nreserve_bytes = 2097152\n")
    proc = ProxyProcess(simulator_factory(tokens_per_second=400.0), db, free_port(), "--config", str(config))
    processes.append(proc)
    reader = StreamReader(UrlClients(proc.url), {"inputs": [{"role": "user", "content": "big [tokens=6000]"}]})
    reader.wait_deltas(3)
    _fill(small_disk)
    # The stream's next checkpoint (the only writer) hits the full disk. Read from what the
    # ProxyProcess's own reader collects: a second reader of the pipe could miss the line, and
    # then wait for ever (it did, once in a few runs).
    wait_until(
        lambda: any("cannot be written: the disk is full" in line or "stream end" in line for line in proc.output),
        timeout=60,
    )
    events = reader.join(60)
    assert assert_well_terminated(events)["event"] == "response.completed"  # recorded with the reserve
    _fill(small_disk)  # the reserve given back is free space for anyone: take it too
    big = {"inputs": [{"role": "user", "content": "x" * 400_000}]}
    with proc.client() as client:
        _assert_storage_unavailable(client.post("/v1/threads", json={"metadata": {"pad": "x" * 400_000}}))
        _assert_storage_unavailable(client.post("/v1/model/response", json=big))
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(30) == 0
    (small_disk / "filler").unlink()
    with contextlib.closing(sqlite3.connect(db)) as conn:
        statuses = [s for (s,) in conn.execute("SELECT status FROM responses")]
        texts = [t for (t,) in conn.execute("SELECT content FROM messages WHERE role = 'assistant'")]
        users = conn.execute("SELECT COUNT(*) FROM messages WHERE role = 'user'").fetchone()[0]
    assert statuses == ["completed"] and texts == [deltas(events)]
    assert users == 1  # the refused request stored nothing
