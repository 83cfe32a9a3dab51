"""Fixtures of the unit layer: a store on a temp file, and the app in process (no uvicorn, no LM Studio)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.config import Config
from proxy.engines import is_url
from proxy.store import Store

from .support import InProcess, make_config


@pytest.fixture
def store(store_database: str) -> Iterator[Store]:
    """A store on a database with no rows, once on each engine (tests/conftest.py: `store_database`)."""
    s = Store(store_database)
    yield s
    s.close()


@pytest.fixture
async def make_api(
    request: pytest.FixtureRequest, tmp_path: Path, store_database: str
) -> AsyncIterator[Callable[..., InProcess]]:
    """make_api(config=None, **create_app_options): a fresh app on its own empty database, once on
    each engine (`store_database`; a second app in one test gets a database of its own); closed at teardown."""
    made: list[InProcess] = []

    def make(config: Config | None = None, **options: Any) -> InProcess:
        db: str | Path = store_database
        if made and is_url(store_database):
            db = request.getfixturevalue("postgres").url()
        elif made:
            db = tmp_path / f"api{len(made)}.sqlite3"
        made.append(InProcess(create_app(config or make_config(), database=db, **options), db))
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
