"""Helpers of the unit layer: keys, config, database dumps, and the app called in process."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from proxy.auth import owner_of
from proxy.config import Config
from proxy.engines import is_url
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


def dump(database: Path | str) -> list[str]:
    """The whole database as text, read through a connection of its own (sees SQLite's WAL, or
    what PostgreSQL has committed): SQL statements for SQLite, a line per row for PostgreSQL."""
    if is_url(str(database)):
        import psycopg

        with psycopg.connect(str(database)) as pg:
            listed = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename"
            tables = [name for (name,) in pg.execute(listed).fetchall()]
            return [f"{t}: {row!r}" for t in tables for row in pg.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()]
    with closing(sqlite3.connect(database)) as db:
        return list(db.iterdump())


class InProcess:
    """The app built by `create_app` on a temp database, called through httpx.ASGITransport.

    No lifespan runs: nothing connects to LM Studio, so only behaviour that needs no model is reachable.
    """

    def __init__(self, app: Starlette, db: Path | str) -> None:
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
