"""`lmstudio-proxy serve` starting: a database it cannot use is one line naming the file and what
to do; once it listens, it settles its process (and an embedded proxy leaves its host process alone)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import proxy
from proxy.app import create_app, uvicorn_config
from proxy.config import Config
from proxy.serve import foreground_server
from proxy.serving import bind
from proxy.store import Store


def _serve(db: Path) -> subprocess.CompletedProcess[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "proxy", "serve", "--database", str(db), "--port", str(port)]
    # LM Studio is never reached: the database is opened first. The timeout only bounds a failure.
    return subprocess.run([*command, "--lmstudio", "127.0.0.1:9"], capture_output=True, text=True, timeout=60)


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], db: Path, problem: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lmstudio-proxy: cannot use the database")
    assert str(db) in lines[0] and problem in lines[0] and "--database" in lines[0]
    assert "listening on" not in result.stdout


@pytest.mark.parametrize(
    "content", [b"\x8f" * 8192, b"SQLite format 3\x00" + b"\xff" * 4080], ids=["garbage", "bad-header"]
)
def test_corrupt_database(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "proxy.sqlite3"
    db.write_bytes(content)
    _assert_one_clear_line(_serve(db), db, "not an SQLite database")


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[list[Path]]:
    """Files to make immutable with chattr +i (undone at teardown); skips where that is not possible."""
    probe = tmp_path / "probe"
    probe.touch()
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i does not work here (needs root and a filesystem with inode flags)")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    files: list[Path] = []
    yield files
    for path in files:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)


@pytest.mark.parametrize("suffixes", [("",), ("", "-wal", "-shm"), ("-shm",)], ids=["db", "all", "shm"])
def test_immutable_database(tmp_path: Path, immutable: list[Path], suffixes: tuple[str, ...]) -> None:
    # "all" is what a restart met after `chattr +i` on a running proxy's files: it died of
    # SIGBUS on its first write to the mapped -shm.
    db = tmp_path / "proxy.sqlite3"
    store = Store(db)
    store.create_thread("owner")
    keep_open = Store(db)  # so closing `store` leaves the -wal and -shm behind, as a crash does
    store.close()
    immutable.extend(Path(f"{db}{suffix}") for suffix in suffixes)
    subprocess.run(["chattr", "+i", *map(str, immutable)], check=True)
    try:
        result = _serve(db)
    finally:
        subprocess.run(["chattr", "-i", *map(str, immutable)], check=True)
        keep_open.close()
    _assert_one_clear_line(result, db, "immutable")
    assert "chattr -i" in result.stderr


def test_late_fragments_on_a_closed_channel_log_one_line_per_channel() -> None:
    # The lmstudio SDK warned once per fragment that arrived after the proxy closed a channel
    # (a cancel LM Studio did not confirm in time): hundreds of KB of logs under load.
    from lmstudio._logging import new_logger

    from proxy.serve import OneLinePerClosedChannel

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign,assignment]
    logger = logging.getLogger("AsyncWebsocketHandler.test")
    logger.addHandler(handler)
    logger.addFilter(OneLinePerClosedChannel(remember=2))
    logger.propagate = False
    sdk = new_logger("AsyncWebsocketHandler.test")
    for channel in (7, 7, 7, 8, 8, 9, 7):
        sdk.warn(
            f"Received unhandled message {{'channelId': {channel}}} for already closed channel", channel_id=channel
        )
    sdk.warn("Websocket closed unexpectedly")
    assert [getattr(r, "channel_id", None) for r in records] == [7, 8, 9, 7, None]  # 7 was forgotten


async def test_serve_takes_what_its_process_holds_out_of_the_collectors_scans_once_it_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = asyncio.Event()  # (this test's process keeps its objects collectable)
    monkeypatch.setattr(gc, "freeze", frozen.set)
    config = Config()
    app = create_app(config, lmstudio_host="127.0.0.1:9", database=tmp_path / "p.sqlite3")
    server = foreground_server(app, uvicorn_config(app, config, 1))
    with bind("127.0.0.1", 0) as sock:
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        try:
            await asyncio.wait_for(frozen.wait(), 30)
            assert server.started  # listening by then, its lifespan's objects made
        finally:
            server.should_exit = True
            await serving


def test_an_embedded_proxy_leaves_its_host_process_collector_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[None] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append(None))
    server = proxy.BackgroundServer(lmstudio_host="127.0.0.1:9", database=tmp_path / "p.sqlite3").start()
    try:
        assert httpx.get(f"{server.base_url}/health", timeout=30).status_code == 200  # serving
    finally:
        server.stop()
    assert calls == []
