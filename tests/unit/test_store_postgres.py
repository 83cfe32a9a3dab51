"""The store on PostgreSQL only: outages, dropped connections, the servers lock, what errors show."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import psycopg
except ImportError:
    if os.environ.get("CI"):  # CI installs it: there, a skip would hide a broken install
        raise
    pytest.skip("psycopg is not installed (pip install -e '.[dev]' installs it)", allow_module_level=True)

from proxy import engines
from proxy.app import create_app
from proxy.errors import StorageUnavailable
from proxy.store import Store, Usage

from .support import InProcess, make_config

# PostgresCluster (tests/conftest.py): url(), stop(), start()
PostgresCluster = Any

OWNER = "owner-a"
USAGE = Usage(input_tokens=1, output_tokens=2)


def eventually(call: Callable[[], object], timeout: float = 10.0) -> object:
    """Call until it stops raising StorageUnavailable (the store waits RECONNECT_SECONDS between attempts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except StorageUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def own_cluster(postgres_factory: Callable[[], PostgresCluster]) -> PostgresCluster:
    """A cluster of this test's own: it is stopped and started again."""
    return postgres_factory()


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[Store]:
    store = Store(postgres_url)
    yield store
    store.close()


def _terminate_others(url: str) -> int:
    """Kill every other connection to the database (as an administrator or a failover would), and
    wait until each is gone (`timeout` in ms: until then the server may not have told the client)."""
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return len(rows)


def test_an_outage_is_storage_unavailable_and_the_store_reconnects_when_the_server_is_back(
    own_cluster: PostgresCluster,
) -> None:
    store = Store(own_cluster.url())
    try:
        tid, rid, _, _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
        own_cluster.stop()
        with pytest.raises(StorageUnavailable, match="PostgreSQL server cannot be reached"):
            store.get_thread(tid)
        with pytest.raises(StorageUnavailable):
            store.begin_response(OWNER, tid, "m", [("user", "again")], None)
        assert store.checkpoint(rid, tid, "partial") is False  # logged, never raised: the stream goes on
        with pytest.raises(StorageUnavailable):  # the outcome is kept for later...
            store.finish_response(rid, status="completed", usage=USAGE, duration=1.0, text="answer")
        assert store.retry_unrecorded() == 1

        own_cluster.start()
        thread = eventually(lambda: store.get_thread(tid))  # no restart of the proxy
        assert isinstance(thread, dict) and thread["id"] == tid
        assert store.retry_unrecorded() == 0  # ...and written once the server is back
        (row,) = store.list_usage(OWNER, None, 10).rows
        assert row["status"] == "completed" and row["output_tokens"] == 2
        assert [m[1] for m in store.history(tid)] == ["q", "answer"]
    finally:
        store.close()


def test_a_dropped_connection_is_replaced_before_the_next_call(pg_store: Store, postgres_url: str) -> None:
    tid = pg_store.create_thread(OWNER)["id"]
    assert _terminate_others(postgres_url) == 1  # the store's own connection
    # The server said it closed the connection: the next call reconnects instead of failing.
    thread = pg_store.get_thread(tid)
    assert thread is not None and thread["id"] == tid
    pg_store.add_message(tid, "user", "after the reconnect")
    assert [m[1] for m in pg_store.history(tid)] == ["after the reconnect"]


def test_the_servers_lock_tells_a_live_proxy_and_survives_a_reconnect(postgres_url: str) -> None:
    first, second = Store(postgres_url), Store(postgres_url)
    try:
        assert first.open_for_serving() is True
        assert first.open_for_serving() is True  # asked again: still this proxy's
        _terminate_others(postgres_url)  # the first proxy's lock goes with its connection...
        first.ping()  # ...and is taken again with the new one
        assert second.open_for_serving() is False
    finally:
        first.close()
        second.close()
    alone = Store(postgres_url)
    try:
        assert alone.open_for_serving() is True  # both are gone
    finally:
        alone.close()


def test_an_unreachable_server_at_start_is_one_line_without_the_password(free_port: Callable[[], int]) -> None:
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/proxy"
    with pytest.raises(StorageUnavailable) as caught:
        Store(url)
    message = caught.value.message
    assert message.startswith(f"cannot use the database postgresql://someone:***@127.0.0.1:{url.split(':')[3]}")
    assert "s3cret" not in message and "\n" not in message.strip()
    assert "--database" in message


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgres://u:p%40ss@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"),
        ("postgresql:///db", "postgresql:///db"),
        (
            "postgresql://h/db?user=u&password=pw&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        ),
        ("postgresql://h/db?password=pw", "postgresql://h/db?password=***"),
    ],
)
def test_redacted(url: str, shown: str) -> None:
    assert engines.redacted(url) == shown


def test_health_of_the_store_after_a_fault_is_logged_once(
    own_cluster: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(own_cluster.url())
    try:
        own_cluster.stop()
        for _ in range(3):
            with pytest.raises(StorageUnavailable):
                store.ping()
        errors = [r for r in caplog.records if r.name == "proxy.store" and r.levelname == "ERROR"]
        assert len(errors) == 1, [r.getMessage() for r in errors]
    finally:
        own_cluster.start()
        store.close()


def test_commits_wait_for_no_fsync_unless_the_url_says_otherwise(postgres_url: str) -> None:
    default, explicit = Store(postgres_url), Store(postgres_url + "?options=-csynchronous_commit%3Don")
    try:
        assert default.db.execute("SHOW synchronous_commit").fetchone()[0] == "off"
        assert explicit.db.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        assert explicit.path.endswith("?options=-csynchronous_commit%3Don")  # the URL, shown as given
    finally:
        default.close()
        explicit.close()


def test_a_connection_dropped_during_a_call_fails_that_call_and_the_next_one_reconnects(
    pg_store: Store, postgres_url: str
) -> None:
    tid = pg_store.create_thread(OWNER)["id"]
    failed: list[BaseException] = []
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("BEGIN")
        admin.execute("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")  # the store's next write waits here

        def write() -> None:
            try:
                pg_store.add_message(tid, "user", "lost with its connection")
            except BaseException as exc:
                failed.append(exc)

        writer = threading.Thread(target=write)
        writer.start()
        waiting = "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        deadline = time.monotonic() + 10
        while not (pids := admin.execute(waiting).fetchall()):
            assert time.monotonic() < deadline, "the store's write never waited for the lock"
            time.sleep(0.01)
        admin.execute("SELECT pg_terminate_backend(%s)", (pids[0][0],))
        writer.join(10)
        admin.execute("ROLLBACK")
    assert not writer.is_alive()
    assert len(failed) == 1 and isinstance(failed[0], StorageUnavailable), failed
    # Whether a write in flight committed is unknown to the store; here it could not have.
    pg_store.add_message(tid, "user", "on a new connection")
    assert [m[1] for m in pg_store.history(tid)] == ["on a new connection"]


async def test_the_api_answers_503_while_the_server_is_down_and_recovers_by_itself(
    own_cluster: PostgresCluster,
) -> None:
    api = InProcess(create_app(make_config(), database=own_cluster.url()), Path("unused"))
    try:
        client = api.client()
        created = await client.post("/v1/threads", json={"title": "kept"})
        assert created.status_code in (200, 201), created.text
        own_cluster.stop()
        for method, path in (
            ("GET", "/v1/threads"),
            ("POST", "/v1/threads"),
            ("GET", f"/v1/threads/{created.json()['id']}"),
        ):
            response = await client.request(method, path, json={} if method == "POST" else None)
            assert response.status_code == 503, response.text
            error = response.json()["error"]
            assert (error["code"], error["status"]) == ("STORAGE_UNAVAILABLE", 503)
        details = (await client.get("/v1/health/details")).json()["components"]
        assert next(c for c in details if c["name"] == "database")["status"] == "unhealthy"
        own_cluster.start()
        for _ in range(200):  # polling, for 10 s at most: the store tries again once a second
            if (listed := await client.get("/v1/threads")).status_code != 503:
                break
            await asyncio.sleep(0.05)
        assert listed.status_code == 200 and [t["title"] for t in listed.json()["data"]] == ["kept"]
    finally:
        await api.aclose()


def test_a_nul_character_is_stored_as_the_replacement_character(pg_store: Store) -> None:
    """PostgreSQL's text cannot hold NUL: the request succeeds, as on SQLite, with U+FFFD in its place."""
    thread = pg_store.create_thread(OWNER, title="a\x00title", metadata={"k": "v\x00"})
    tid, rid, (mid,), _ = pg_store.begin_response(OWNER, thread["id"], "m", [("user", "a\x00b")], None)
    pg_store.add_files(
        OWNER, "org", [{"id": "file_1", "filename": "n\x00.txt", "mime_type": "text/plain", "size": 1}], "ready"
    )
    message = pg_store.get_message(tid, mid)
    assert message is not None and message["content"] == "a\ufffdb"
    stored = pg_store.get_thread(tid)
    assert stored is not None and stored["title"] == "a\ufffdtitle"
    assert stored["metadata"] == {"k": "v\x00"}  # JSON escapes it: kept as sent
    file = pg_store.get_file(OWNER, "file_1")
    assert file is not None and file["filename"] == "n\ufffd.txt"
    assert rid


def test_maintain_replaces_a_dropped_connection_between_requests(postgres_url: str) -> None:
    store, other = Store(postgres_url), Store(postgres_url)
    try:
        assert store.open_for_serving() is True
        _terminate_others(postgres_url)  # both stores' connections; `store` serves, `other` does not
        store.maintain()  # what the app runs once a second
        # A new connection, with the servers lock, before any request needed one.
        assert other.open_for_serving() is False
        assert _terminate_others(postgres_url) == 2
    finally:
        store.close()
        other.close()


class Relay:
    """A TCP relay in front of PostgreSQL that can turn into a server that accepts and never answers
    (as one gone from the network looks to a client still in its connect timeout)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.sockets: list[socket.socket] = []  # every socket it opened, closed by close()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.silent.is_set():
                continue  # held open, never answered
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets.append(upstream)
            self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def go_silent(self) -> None:
        """Drop the connections through the relay; new ones are accepted and never answered."""
        self.silent.set()
        for client, upstream in self.pairs:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        self.pairs.clear()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close() alone does not)
        self.listener.close()
        self._thread.join(5)
        assert not self._thread.is_alive()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_a_hanging_server_holds_the_calls_once_then_each_fails_at_once(postgres: PostgresCluster) -> None:
    url = postgres.url()
    relay = Relay(postgres.port)
    through = url.replace(f":{postgres.port}/", f":{relay.port}/") + "?connect_timeout=2"
    store = Store(through)
    try:
        tid = store.create_thread(OWNER)["id"]
        relay.go_silent()
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):  # the one attempt on the caller's thread waits out its timeout
            store.get_thread(tid)
        assert time.monotonic() - started >= 1.5
        for _ in range(20):  # meanwhile the next attempts hang in the worker thread
            started = time.monotonic()
            with pytest.raises(StorageUnavailable, match="PostgreSQL server cannot be reached"):
                store.get_thread(tid)
            assert time.monotonic() - started < 0.2
        relay.silent.clear()  # the server answers again: an attempt started from now on gets through
        thread = eventually(lambda: store.get_thread(tid))
        assert isinstance(thread, dict) and thread["id"] == tid
    finally:
        store.close()
        relay.close()
        postgres.drop(url)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (psycopg.OperationalError("connection failed"), "the PostgreSQL server cannot be reached"),
        (psycopg.errors.AdminShutdown(), "the PostgreSQL server cannot be reached"),
        (psycopg.errors.ConnectionFailure(), "the PostgreSQL server cannot be reached"),
        (psycopg.InterfaceError("the connection is closed"), "the PostgreSQL server cannot be reached"),
        (psycopg.errors.QueryCanceled(), "the PostgreSQL server could not complete the call"),
        (psycopg.errors.DeadlockDetected(), "the PostgreSQL server could not complete the call"),
        (psycopg.errors.DiskFull(), "the database server is out of space or memory"),
        (psycopg.errors.ReadOnlySqlTransaction(), "the database is read-only"),
        (psycopg.errors.InsufficientPrivilege(), "access to the database is denied"),
        (psycopg.errors.UniqueViolation(), None),  # the request's (a bug), not the storage's
        (psycopg.errors.UndefinedTable(), None),
        (ValueError("x"), None),
    ],
)
def test_which_errors_are_storage_faults(error: BaseException, reason: str | None) -> None:
    assert engines.fault(error) == reason
