"""Fixtures of the unit layer: a store on a temp file, and the app in process (no uvicorn, no LM Studio)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from proxy.app import create_app
from proxy.auth import owner_of
from proxy.config import Config
from proxy.store import Store

KEY = "unit-key-one"
OTHER_KEY = "unit-key-two"
OWNER = owner_of(KEY)
OTHER_OWNER = owner_of(OTHER_KEY)


def make_config(**sections: dict[str, Any]) -> Config:
    """Defaults with some keys of some sections changed: make_config(auth={"api_keys": [...]})."""
    config = Config()
    for section, changes in sections.items():
        config = config.replace(section, **changes)
    return config


def dump(path: Path) -> list[str]:
    """The whole database as SQL, read through a connection of its own (sees the WAL)."""
    with closing(sqlite3.connect(path)) as db:
        return list(db.iterdump())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "store.sqlite3")
    yield s
    s.close()


class InProcess:
    """The app built by `create_app` on a temp database, called through httpx.ASGITransport.

    No lifespan runs: nothing connects to LM Studio, so only behaviour that needs no model is reachable.
    """

    def __init__(self, app: Starlette, db: Path) -> None:
        self.app = app
        self.db = db
        self.store: Store = app.state.proxy.store
        self._clients: list[httpx.AsyncClient] = []

    def client(self, key: str | None = KEY) -> httpx.AsyncClient:
        headers = {"X-API-Key": key} if key else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://127.0.0.1:8000", headers=headers
        )
        self._clients.append(client)
        return client

    def dump(self) -> list[str]:
        return dump(self.db)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        self.store.close()


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[Callable[..., InProcess]]:
    """make_api(config=None): a fresh app on its own database file; all are closed at teardown."""
    made: list[InProcess] = []

    def make(config: Config | None = None) -> InProcess:
        db = tmp_path / f"api{len(made)}.sqlite3"
        made.append(InProcess(create_app(config or make_config(), database=db), db))
        return made[-1]

    yield make
    for api in made:
        await api.aclose()


@pytest.fixture
def api(make_api: Callable[..., InProcess]) -> InProcess:
    return make_api()


@pytest.fixture
def client(api: InProcess) -> httpx.AsyncClient:
    return api.client()
