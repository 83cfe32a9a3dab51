"""The two engines under the store: what differs between SQLite (a file) and PostgreSQL (a URL).

The store writes each query once, with `?` placeholders and SQL both engines accept; this
module holds the rest:
- `Dialect`: the few snippets that really differ (how a write transaction begins, a
  case-insensitive LIKE, column types in the migrations' DDL, the migrations lock).
- `PostgresConnection`: a psycopg 3 connection with the interface of the `sqlite3.Connection`
  the store already uses (`execute` with `?`, rows readable by index and by name,
  `in_transaction`, `total_changes`), that reconnects when the server went away.

Design decisions (read before changing):
- Synchronous, like the SQLite store it stands beside: every store method is called on the
  event loop, so each round trip to PostgreSQL blocks the loop for its duration (a fraction
  of a millisecond on the same host, a network round trip otherwise). That keeps one Store
  with one copy of each query and no caller changes; an asyncio store is a redesign of every
  caller. The waits are bounded: TCP keepalives and `tcp_user_timeout` (overridable in the
  URL) bound a call on a dead network to about 5 s, and `connect_timeout` the one reconnect
  attempt made on the loop when a dropped connection is found; after that one failed,
  attempts run in a worker thread (one a second) and each request gets a fast 503 meanwhile.
- One connection, not a pool: calls never overlap (they run one at a time on the loop), so a
  pool would only add connections. psycopg prepares a statement after it has run a few
  times, per connection.
- Autocommit, with explicit BEGIN/COMMIT as on SQLite: a transaction is exactly the store's
  `transaction()` block. `synchronous_commit=off` (unless the URL sets `options`): a commit
  waits for the server, not for its disk, as SQLite's commits here wait for no fsync; a crash
  of the server can lose the last moments' transactions, never corrupt anything.
- PostgreSQL's text cannot hold NUL characters: one in a parameter is stored as U+FFFD
  (SQLite keeps it), so such a request succeeds on both engines.
- A dropped connection (server restarted, connection killed) is noticed before the next
  call: the socket of an idle connection is readable only when the server has closed it or
  said why it will (the proxy never LISTENs on this connection), and then it is replaced.
  A connection that breaks during a call fails that call (StorageUnavailable, 503: whether a
  write that was in flight committed is unknown) and the next call reconnects.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import re
import select
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("proxy.store")

URL_SCHEMES = ("postgresql://", "postgres://")
RECONNECT_SECONDS = 1.0
LISTEN_APPLICATION = "lmstudio-proxy-listen"  # the application_name of each replica's LISTEN connection
# Bounds on how long a dead server or network can hold the event loop; a URL's own values win.
CONNECT_DEFAULTS = {
    "connect_timeout": "3",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "1",
    "keepalives_count": "3",
    "tcp_user_timeout": "5000",
    "application_name": "lmstudio-proxy",
    # A commit does not wait for the server's WAL fsync (as SQLite's synchronous=NORMAL here):
    # a server crash can lose the last moments' transactions, never corrupt the database.
    "options": "-c synchronous_commit=off",
}


def is_url(database: str) -> bool:
    """Whether `database` names a PostgreSQL database (else it is a SQLite file)."""
    return database.startswith(URL_SCHEMES)


def redacted(url: str) -> str:
    """The URL without its password (in the user part or a `password=` parameter): what logs, errors
    and /health show."""
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query:
        return url  # as given (urlunsplit would drop the `//` of postgresql:///db)
    if parts.password is not None:
        user, host = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=user.split(":", 1)[0] + ":***@" + host)
    if "password=" in parts.query:
        query = re.sub(r"(^|&)password=[^&]*", r"\1password=***", parts.query)
        parts = parts._replace(query=query)
    return urlunsplit(parts)


@dataclass(frozen=True)
class Dialect:
    name: str
    begin: str  # starts a write transaction
    like: str  # case-insensitive (for ASCII, as SQLite's LIKE) pattern match
    ddl_types: tuple[tuple[str, str], ...] = ()  # regex → replacement, applied to migration DDL
    lock_migrations: str | None = None  # run first in the migrations' transaction
    clock: str = ""  # the database's clock, in seconds since the epoch (leases, cancel modes across replicas)

    def ddl(self, sql: str) -> str:
        for pattern, replacement in self.ddl_types:
            sql = re.sub(pattern, replacement, sql)
        return sql


SQLITE = Dialect(  # IMMEDIATE: takes the write lock at once
    "sqlite", begin="BEGIN IMMEDIATE", like="LIKE", clock="((julianday('now') - 2440587.5) * 86400.0)"
)
POSTGRES = Dialect(
    "postgresql",
    begin="BEGIN",
    like="ILIKE",
    ddl_types=(
        (r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
        (r"\bINTEGER\b", "BIGINT"),  # SQLite's INTEGER is 64-bit
        (r"\bREAL\b", "DOUBLE PRECISION"),  # SQLite's REAL is 64-bit; PostgreSQL's is 32
    ),
    # Replicas starting together must not both apply a migration; the lock ends with the transaction.
    lock_migrations="SELECT pg_advisory_xact_lock(7358451016830513458)",
    # clock_timestamp(), not now(): now() is when the transaction began.
    clock="(EXTRACT(EPOCH FROM clock_timestamp())::float8)",
)
SERVERS_LOCK = 7358451016830513459  # the advisory lock each serving proxy holds shared (Store.open_for_serving)


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...
    def close(self) -> None: ...


class Connection(Protocol):
    """What the store uses of a connection: a sqlite3.Connection has it, a PostgresConnection too."""

    @property
    def in_transaction(self) -> bool: ...
    @property
    def total_changes(self) -> int: ...
    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Any, /) -> Any: ...
    def close(self) -> None: ...


class Row:
    """A result row read by index, by column name, iterated (values) or made a dict: as sqlite3.Row."""

    __slots__ = ("_names", "_values")

    def __init__(self, values: Sequence[Any], names: dict[str, int]) -> None:
        self._values = values
        self._names = names

    def __getitem__(self, key: int | str) -> Any:
        return self._values[self._names[key] if isinstance(key, str) else key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: psycopg.Cursor[Any]) -> Callable[[Sequence[Any]], Row]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}
    return functools.partial(Row, names=names)


@functools.lru_cache(maxsize=1024)
def _placeholders(sql: str) -> str:
    """`?` placeholders as psycopg's `%s` (a literal `%` doubled); no query has a `?` in a string."""
    return sql.replace("%", "%%").replace("?", "%s")


def _without_nul(parameters: Sequence[Any]) -> Sequence[Any]:
    """PostgreSQL's text cannot hold NUL (SQLite's can): a NUL a client sent is stored as U+FFFD,
    rather than the request failing on one engine only. JSON columns are unaffected (json.dumps
    writes NUL as an escape)."""
    if not any(isinstance(v, str) and "\x00" in v for v in parameters):
        return parameters
    return [v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in parameters]


def unique_violation(exc: BaseException, constraint: str) -> bool:
    """Whether `exc` is PostgreSQL refusing a row that the unique index `constraint` forbids."""
    diag = getattr(exc, "diag", None)
    return getattr(exc, "sqlstate", None) == "23505" and getattr(diag, "constraint_name", None) == constraint


def one_line(exc: BaseException) -> str:
    """A driver's message on one line (libpq adds hints on lines of their own)."""
    return " ".join(str(exc).split())


def fault(exc: BaseException) -> str | None:
    """Why the server or the connection, not the request, is at fault; None for any other error."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return None
    state = exc.sqlstate or ""  # psycopg's classes do not nest as SQLSTATE classes do: read the code
    if state.startswith("53"):
        return "the database server is out of space or memory"
    if state == "25006":
        return "the database is read-only"
    if state == "42501":
        return "access to the database is denied"
    if isinstance(exc, psycopg.InterfaceError) or state.startswith("08") or state in ("57P01", "57P02", "57P03"):
        return "the PostgreSQL server cannot be reached"
    if isinstance(exc, psycopg.OperationalError):  # libpq's own connection failures have no SQLSTATE
        return (
            "the PostgreSQL server cannot be reached"
            if not state
            else "the PostgreSQL server could not complete the call"
        )
    return None


def _close_connected(attempt: concurrent.futures.Future[psycopg.Connection[Row]]) -> None:
    if not attempt.cancelled() and attempt.exception() is None:
        attempt.result().close()


class PostgresConnection:
    """A psycopg connection used as the store uses a sqlite3.Connection; see the module docstring."""

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ImportError(
                "PostgreSQL needs psycopg: pip install 'lmstudio-proxy[postgresql]' (or 'psycopg[binary]')"
            ) from exc
        self._psycopg = psycopg
        self.url = url
        self.display = redacted(url)
        self.total_changes = 0  # rows written by this connection (as sqlite3's), for the store's bookkeeping
        self.on_connect: list[Callable[[psycopg.Connection[Row]], None]] = []  # run on each new connection
        self._conn: psycopg.Connection[Row] | None = None
        self._next_attempt = 0.0
        self._last_error = ""
        self._connected_before = False
        # Reconnects after a failed attempt (see `ensure`); owned here, shut down by close().
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="postgresql-connect")
        self._attempt: concurrent.futures.Future[psycopg.Connection[Row]] | None = None
        try:
            self._adopt(self._connect_with_hooks)  # at start: on the caller's thread, as SQLite opens
        except BaseException:
            self._worker.shutdown()
            raise

    def _connect(self, **overrides: str) -> psycopg.Connection[Row]:
        given = self._psycopg.conninfo.conninfo_to_dict(self.url)
        options = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
        conninfo = self._psycopg.conninfo.make_conninfo(self.url, **{**options, **overrides})
        return self._psycopg.connect(conninfo, autocommit=True, row_factory=_row_factory)

    def listener(self, channels: Sequence[str]) -> psycopg.Connection[Row]:
        """A second connection, LISTENing on `channels`: for a thread of its own (never this one's calls).

        Named `lmstudio-proxy-listen` in pg_stat_activity. Connecting may block up to connect_timeout.
        """
        conn = self._connect(application_name=LISTEN_APPLICATION)
        try:
            for channel in channels:
                conn.execute(f'LISTEN "{channel}"')
        except BaseException:
            conn.close()
            raise
        return conn

    def ensure(self) -> None:
        """Have a connection not known to be broken, or raise psycopg.OperationalError at once.

        When the connection is found dropped, one attempt is made at once (a restarted server
        answers in milliseconds). Once that failed, attempts run in a worker thread, one every
        RECONNECT_SECONDS at most, and each call meanwhile fails at once: a connect that hangs
        (a server gone from the network waits out `connect_timeout`) never holds the loop again.
        """
        conn = self._conn
        if conn is not None:
            if not conn.closed and not conn.broken and not self._dropped(conn):
                return
            conn.close()
            self._conn = None
            self._adopt(self._connect_with_hooks)
            return
        attempt = self._attempt
        if attempt is not None and attempt.done():
            self._attempt = None
            self._adopt(attempt.result)  # the connection, or the attempt's error
            return
        if attempt is None and time.monotonic() >= self._next_attempt:
            self._attempt = self._worker.submit(self._connect_with_hooks)
        raise self._psycopg.OperationalError(self._last_error)  # the same words: logged once

    def _connect_with_hooks(self) -> psycopg.Connection[Row]:
        new = self._connect()
        try:
            for hook in list(self.on_connect):
                hook(new)
        except BaseException:
            new.close()
            raise
        return new

    def _adopt(self, connect: Callable[[], psycopg.Connection[Row]]) -> None:
        try:
            new = connect()
        except BaseException as exc:
            self._next_attempt = time.monotonic() + RECONNECT_SECONDS
            self._last_error = one_line(exc)
            raise
        self._conn = new
        if self._connected_before:
            log.warning("connected to %s again", self.display)
        self._connected_before = True

    def _dropped(self, conn: psycopg.Connection[Row]) -> bool:
        """An idle connection whose socket is readable was closed (or is being closed) by the server."""
        if self.in_transaction:
            return False
        try:
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
        except (OSError, ValueError):
            return True
        if readable:
            log.warning("the connection to %s was closed by the server; reconnecting", self.display)
        return bool(readable)

    @property
    def _live(self) -> psycopg.Connection[Row]:
        if self._conn is None:
            raise self._psycopg.OperationalError("not connected")
        return self._conn

    @property
    def in_transaction(self) -> bool:
        conn = self._conn
        if conn is None or conn.broken:
            return False
        status = conn.info.transaction_status
        return status in (self._psycopg.pq.TransactionStatus.INTRANS, self._psycopg.pq.TransactionStatus.INERROR)

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> psycopg.Cursor[Row]:
        if parameters:
            cursor = self._live.execute(_placeholders(sql), _without_nul(parameters))
        else:
            cursor = self._live.execute(sql)
        if cursor.description is None and cursor.rowcount > 0:
            self.total_changes += cursor.rowcount
        return cursor

    def executemany(self, sql: str, seq_of_parameters: Sequence[Sequence[Any]]) -> None:
        if not seq_of_parameters:
            return
        with self._live.cursor() as cursor:
            cursor.executemany(_placeholders(sql), [_without_nul(p) for p in seq_of_parameters])
            self.total_changes += max(cursor.rowcount, 0)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._worker.shutdown(wait=False, cancel_futures=True)
        attempt, self._attempt = self._attempt, None
        if attempt is not None:  # a connect still under way: whatever it returns is closed
            attempt.add_done_callback(_close_connected)
