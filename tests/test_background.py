"""`serve_in_background()` / `BackgroundServer`: a temporary database unless one is given."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

import proxy
from proxy.state import default_database_path

FAST = {"tokens_per_second": 0.0, "load_seconds": 0.05, "prompt_seconds": 0.0}
HELLO = {"inputs": [{"role": "user", "content": "Hello [tokens=3]"}]}


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's data directory, moved into tmp_path (platformdirs reads XDG_DATA_HOME on each call)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data-home"))
    assert str(default_database_path()).startswith(str(tmp_path))
    return tmp_path / "data-home"


def reply(base_url: str) -> str:
    response = httpx.post(f"{base_url}/v1/model/response", json=HELLO, headers={"X-API-Key": "k"}, timeout=30)
    response.raise_for_status()
    thread_id: str = response.json()["thread_id"]
    return thread_id


def threads_in(database: Path) -> list[str]:
    with sqlite3.connect(database) as db:
        return [row[0] for row in db.execute("SELECT id FROM threads")]


def test_a_temporary_database_by_default_deleted_on_stop(data_home: Path) -> None:
    server = proxy.BackgroundServer(simulate=True, simulator_options=FAST).start()
    try:
        database = server.database_path
        assert database is not None and database != default_database_path()
        thread_id = reply(server.base_url)
        assert thread_id in threads_in(database)
    finally:
        server.stop()
    assert not database.parent.exists()
    assert not data_home.exists()  # nothing was written into the user's data directory


def test_serve_in_background_leaves_the_data_directory_alone(data_home: Path) -> None:
    with proxy.serve_in_background(simulate=True, simulator_options=FAST) as base_url:
        reply(base_url)
    assert not data_home.exists()


def test_a_given_database_is_used_and_kept(data_home: Path, tmp_path: Path) -> None:
    database = tmp_path / "mine.sqlite3"
    with proxy.serve_in_background(simulate=True, simulator_options=FAST, database=database) as base_url:
        thread_id = reply(base_url)
    assert threads_in(database) == [thread_id]
    assert not data_home.exists()
