"""The store: threads, messages and responses in SQLite or PostgreSQL; the only module that writes SQL.

Design decisions (read before changing):
- Two engines, one store: a file path is SQLite (the zero-configuration default), a
  `postgresql://` URL is PostgreSQL. Each query is written once, with `?` placeholders and
  SQL both accept; what really differs (transaction start, LIKE, DDL types, locks) is in
  `proxy/engines.py`, which also adapts a psycopg connection to the sqlite3 interface used
  here. PostgreSQL is synchronous too, called on the event loop like SQLite: each round trip
  blocks the loop (see `proxy/engines.py` for why, and how long it can at most). Everything
  below about files (SIGBUS guard, deleted database, WAL checkpoint, reserve file) is SQLite's;
  on PostgreSQL those parts find no files and do nothing, and a server that cannot be reached
  (or a dropped connection) is StorageUnavailable, reconnected on the next call.
- One connection, used from the event loop thread. WAL with `synchronous=NORMAL` makes a
  commit a write to the WAL without an fsync, well under a millisecond, so running the
  calls inline is cheaper than hopping to a worker thread for each one; a crash can lose
  at most the last transactions, never corrupt the file. The one fsync left, the WAL
  checkpoint, runs on a short-lived second connection in a worker thread when serving
  (`checkpoint_in_background`, `checkpoint_wal`).
- The schema is built by the named migrations of `proxy/migrations.py`, recorded in the
  `migrations` table; never edit a migration that has shipped, append a new one.
- Owners are SHA-256 hashes of API keys: the key itself is never stored.
- `seq` (an INTEGER PRIMARY KEY alias) gives a stable order for cursors.
- Rows in `responses` outlive their messages and threads: usage is never lost.
- Storage faults are `StorageUnavailable` (503), never a crash or a silent loss:
  * SQLite maps the `-shm` file (the WAL index) into memory and writes it on every
    transaction, reads included. On ext4, a write fault on a page of a file made immutable
    (`chattr +i`) is SIGBUS (`ext4_page_mkwrite`), which kills the process. Exclusive
    locking would keep the WAL index on the heap, but it shuts out every other connection
    (a second proxy, the checkpoint connection, `sqlite3` on the command line). So each call
    first looks at the files through descriptors held open for that purpose (`_check`,
    a few microseconds): an immutable file refuses the call before SQLite touches the map.
    A `chattr` that lands between that look and SQLite's write can still SIGBUS.
  * A database deleted while serving keeps working through the open descriptors, so every
    write would be acknowledged and lost at exit: `_check` sees the link count drop to 0,
    copies what the connection still sees back to the path (`_rescue`) and refuses every
    call from then on (restart to use the restored file). The checkpoint connection opens
    the path with `mode=rw` and after checking it is the same file, so it never creates an
    empty database in its place.
  * Disk full: a small reserve file (`reserve_space`) is given back to record the outcomes
    of running responses, never to accept new ones; an outcome that still cannot be written
    is retried (`retry_unrecorded`) until it can, and at `close()`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import secrets
import sqlite3
import sys
import time
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from proxy import engines, migrations
from proxy.errors import StorageUnavailable, StreamAlreadyActive

try:
    import fcntl
except ImportError:  # Windows: no flock; see Store.open_for_serving
    fcntl = None  # type: ignore[assignment]


log = logging.getLogger("proxy.store")

#: Under commits that never pause (hundreds a second: the simulator at full speed), the background
#: checkpoint never lets the WAL start over: commits land while it copies, so when the next one
#: begins the WAL is not wholly copied, and SQLite appends instead (checkpoint starvation). 1,000
#: streamed requests back to back grew it by about 12 MB a second, 90 MB in 7 s, and every page
#: read searches it. Past this size the proxy's own connection copies the rest (`restart_wal`).
WAL_RESTART_BYTES = 64 << 20
#: When the WAL starts over, SQLite truncates its file to this size; without a limit the file
#: keeps the largest size it ever had.
WAL_KEEP_BYTES = 16 << 20
WAL_FRAME_HEADER = 24  # bytes before each page in the WAL

FS_IOC_GETFLAGS = 0x80086601  # linux/fs.h, the flags `lsattr` shows
FS_IMMUTABLE_FL = 0x10

# SQLite's primary result codes that mean the storage, not the request, is at fault.
STORAGE_FAULTS = {
    sqlite3.SQLITE_FULL: "the disk is full",
    sqlite3.SQLITE_IOERR: "reading or writing the file failed",
    sqlite3.SQLITE_READONLY: "the file is read-only",
    sqlite3.SQLITE_CANTOPEN: "the file cannot be opened",
    sqlite3.SQLITE_PERM: "access to the file is denied",
    sqlite3.SQLITE_BUSY: "another program holds a lock on it",
    sqlite3.SQLITE_CORRUPT: "the file is corrupt",
    sqlite3.SQLITE_NOTADB: "the file is not an SQLite database",
}

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """Check the files before the call (see the module docstring); storage faults become StorageUnavailable."""

    @functools.wraps(method)
    def guarded(self: Store, *args: Any, **kwargs: Any) -> Any:
        if not self.db.in_transaction:  # inside one, the outermost call has checked
            self._check()
        changes = self.db.total_changes
        try:
            result = method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise self._fault_from(exc) from exc
        except Exception as exc:
            if self._pg is None or (reason := engines.fault(exc)) is None:
                raise
            raise self._unavailable(f"The database cannot be used: {reason} ({engines.one_line(exc)}).") from exc
        if self._fault is not None and self.db.total_changes != changes:
            self._recovered()
        return result

    return typing.cast(F, guarded)


def fault_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of the error behind `exc`, if there is one."""
    cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
    code = getattr(cause, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _immutable(fd: int) -> bool:
    if fcntl is None:
        return False
    try:
        flags = fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))
    except OSError:  # a filesystem without inode flags (tmpfs before Linux 6.0, NFS...)
        return False
    return bool(int.from_bytes(flags[:4], sys.byteorder) & FS_IMMUTABLE_FL)


def _what_to_do(path: str) -> str:
    if engines.is_url(path):
        return f"fix it, or choose another database with --database or database.path ({path})"
    return f"fix it, or choose another file with --database or database.path ({path})"


def _enable_wal(db: sqlite3.Connection, patience: float = 5.0) -> None:
    """WAL mode. Processes opening a new file together (replicas starting at once) can have this
    refused at once, "database is locked", while another one migrates: SQLite calls no busy
    handler for it. So it is tried again, for as long as the busy timeout would wait."""
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if fault_code(exc) != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.01)  # a retry's pause (the other process's migrations take milliseconds)


# A response's usage, as `_usage_values` gives it: written when it ends, and again if LM Studio's
# own counts come after the outcome was recorded (a stop settled at once).
USAGE_COLUMNS = (
    "stop_reason = ?, input_tokens = ?, output_tokens = ?, total_tokens = ?, time_to_first_token = ?,"
    " tokens_per_second = ?"
)


def _usage_values(usage: Usage) -> tuple[Any, ...]:
    return (
        usage.stop_reason, usage.input_tokens, usage.output_tokens, usage.input_tokens + usage.output_tokens,
        usage.time_to_first_token, usage.tokens_per_second,
    )  # fmt: skip


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class Checkpoint(typing.NamedTuple):
    """The partial answer of a running prediction, to save (`Store.checkpoints`)."""

    response_id: str
    thread_id: str
    text: str
    tool_calls: list[dict[str, Any]] | None


@dataclass(frozen=True)
class NewResponse:
    """An accepted request's rows, with their ids, before they are stored (`Store.store_response`):
    the proxy sends the prediction to LM Studio first, so the commit is not on the way to the
    first token."""

    owner: str
    thread_id: str
    thread_created: bool
    response_id: str
    message_ids: list[str]
    model: str
    inputs: list[tuple[str, str, dict[str, Any] | None]]  # (role, content, metadata)
    thread_fields: dict[str, Any] | None
    cut: tuple[str, bool] | None


def new_response(
    owner: str,
    thread_id: str,
    model: str,
    inputs: list[tuple[str, str]] | list[tuple[str, str, dict[str, Any] | None]],
    thread_fields: dict[str, Any] | None,
    cut: tuple[str, bool] | None = None,
) -> NewResponse:
    """The rows of a request on `thread_id` (a new thread if empty), with new ids."""
    items = [(item[0], item[1], item[2] if len(item) > 2 else None) for item in inputs]
    return NewResponse(
        owner, thread_id or new_id("thrd"), not thread_id, new_id("resp"), [new_id("msg") for _ in items], model,
        items, thread_fields, cut,
    )  # fmt: skip


_second: tuple[int, str] = (-1, "")  # the last second now_iso formatted, and its text


def now_iso() -> str:
    """UTC now as 2026-12-01T22:49:39.123456Z; the date and time part is formatted once a second.

    A request stores several timestamps, and strftime (with Python's own %f handling) was most
    of the cost of each; the second's text is kept, and only the microseconds are formatted.
    """
    global _second
    seconds, nanoseconds = divmod(time.time_ns(), 1_000_000_000)
    second, text = _second
    if second != seconds:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second = (seconds, text)
    return f"{text}.{nanoseconds // 1000:06d}Z"


MESSAGE_COUNT = "(SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id AND m.deleted_at IS NULL) AS message_count"
THREAD_FIELDS = ("title", "metadata", "assistant_id", "visible_in_ui")


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    has_more: bool


STOP_CHANNEL = "lmstudio_proxy_stop"  # NOTIFY payload: the replica whose response a cancel asks to stop
ENDED_CHANNEL = "lmstudio_proxy_ended"  # NOTIFY payload: a response whose stop has been committed


@dataclass(frozen=True)
class CancelTicket:
    """What `Store.decide_cancel` found: missing | forbidden | wait (for the outcome) | answered."""

    kind: str
    response_id: str = ""
    replica_id: str | None = None
    body: dict[str, Any] | None = None
    decided: bool = False  # a cancel's body is stored: the owner will stop with it
    late_mode: str | None = None  # this cancel applied its mode to a response a disconnect had stopped


@dataclass(frozen=True)
class Usage:
    """What one prediction cost, as LM Studio reported it (or counted by the proxy)."""

    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None


class Store:
    db: engines.Connection

    def __init__(self, path: str | Path, max_page_bytes: int = 4_194_304) -> None:
        """Open (or create) the database, a SQLite file or a `postgresql://` URL; StorageUnavailable, with
        one line saying what to do, if it can't be used."""
        self.path = str(path)  # a PostgreSQL URL without its password (engines.redacted)
        self.max_page_bytes = max_page_bytes
        self._servers_lock: int | None = None  # see open_for_serving()
        self._watched: list[tuple[str, int]] = []  # (path, read-only descriptor): the files `_check` looks at
        self._gone: str | None = None  # set for good once the database file was deleted or replaced
        self._fault: str | None = None  # the storage fault last logged, until a write succeeds again
        self._unrecorded: dict[str, Callable[[], Any]] = {}  # outcomes to write once the storage is back
        self._reserve_bytes = 0
        self._pg: engines.PostgresConnection | None = None
        self._serving = False  # PostgreSQL: this connection holds the servers lock (open_for_serving)
        self.replica_id: str | None = None  # PostgreSQL: the replica whose responses this store begins
        if engines.is_url(self.path):
            self.dialect = engines.POSTGRES
            self._open_postgres(self.path)
            return
        self.dialect = engines.SQLITE
        if self.path != ":memory:":
            self._preflight()
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA busy_timeout=5000")
            _enable_wal(self.db)
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.migrate()
        except sqlite3.Error as exc:
            with contextlib.suppress(AttributeError, sqlite3.Error):
                self.db.close()
            reason = STORAGE_FAULTS.get(fault_code(exc) or 0, str(exc))
            raise StorageUnavailable(f"cannot use the database {self.path}: {reason} ({exc}); "
                                     f"{_what_to_do(self.path)}") from exc  # fmt: skip
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            for name in (self.path, self.path + "-wal", self.path + "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    self._watched.append((name, os.open(name, os.O_RDONLY | os.O_CLOEXEC)))

    def _open_postgres(self, url: str) -> None:
        self.path = engines.redacted(url)
        try:
            self._pg = engines.PostgresConnection(url)
            self.db = self._pg
            self.migrate()
        except Exception as exc:
            if self._pg is not None:
                self._pg.close()
            if not isinstance(exc, ImportError) and engines.fault(exc) is None:
                raise
            raise StorageUnavailable(
                f"cannot use the database {self.path}: {engines.one_line(exc)}; {_what_to_do(self.path)}"
            ) from exc

    def _preflight(self) -> None:
        """Refuse, before SQLite maps anything, a database it could not write (see the module docstring)."""
        where = Path(self.path).parent
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot use the database {self.path}: cannot create {where}: "
                                     f"{exc.strerror}; {_what_to_do(self.path)}") from exc  # fmt: skip
        for name in (self.path, self.path + "-wal", self.path + "-shm"):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StorageUnavailable(f"cannot use the database {self.path}: cannot read {name}: "
                                         f"{exc.strerror}; {_what_to_do(self.path)}") from exc  # fmt: skip
            try:
                if _immutable(fd):
                    raise StorageUnavailable(f"cannot use the database {self.path}: {name} is immutable "
                                             f"(`chattr -i {name}` to undo); {_what_to_do(self.path)}")  # fmt: skip
            finally:
                os.close(fd)
            try:
                os.close(os.open(name, os.O_RDWR | os.O_CLOEXEC))
            except OSError as exc:
                raise StorageUnavailable(f"cannot use the database {self.path}: {name} is read-only "
                                         f"({exc.strerror}); {_what_to_do(self.path)}") from exc  # fmt: skip
        if not os.access(where, os.W_OK):
            raise StorageUnavailable(
                f"cannot use the database {self.path}: cannot create files in {where} "
                f"(SQLite needs its -wal and -shm files there); {_what_to_do(self.path)}"
            )

    def close(self) -> None:
        """Write what could not be written yet (see `retry_unrecorded`), then close."""
        if self._unrecorded:
            self.retry_unrecorded(use_reserve=True)
        if self._unrecorded:
            log.error(
                "the outcome of %d response(s) could not be written to %s (%s): they are marked interrupted "
                "at the next start: %s", len(self._unrecorded), self.path, self._fault, ", ".join(self._unrecorded),
            )  # fmt: skip
        if any(_immutable(fd) for _, fd in self._watched):
            # Closing the last connection checkpoints, which writes the WAL index: SIGBUS (see the
            # module docstring). The connection is never freed instead; the OS drops its locks at exit.
            log.error("not closing %s, whose files are immutable: the WAL stays beside it", self.path)
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self.db))
        else:
            self.db.close()
        for _, fd in self._watched:
            os.close(fd)
        self._watched = []
        if self._servers_lock is not None:
            os.close(self._servers_lock)  # releases the flock
            self._servers_lock = None
        if self._reserve_bytes:
            with contextlib.suppress(OSError):
                os.unlink(self.path + "-reserve")

    # -- storage faults (see the module docstring) ---------------------------------------

    def _check(self) -> None:
        """Raise StorageUnavailable if a file of the database is gone or immutable; a few microseconds."""
        if self._gone is not None:
            raise StorageUnavailable(self._gone)
        if self._pg is not None:
            try:
                self._pg.ensure()
            except Exception as exc:  # connecting: whatever the reason, the database cannot be used
                reason = engines.fault(exc) or "the PostgreSQL server refused the connection"
                raise self._unavailable(f"The database cannot be used: {reason} ({engines.one_line(exc)}).") from exc
        for name, fd in self._watched:
            if os.fstat(fd).st_nlink == 0:
                self._lost(f"{name} was deleted")
        # Only the -shm is mapped; SQLite reports an immutable database or WAL as an error.
        if self._watched and _immutable(self._watched[-1][1]):
            name = self._watched[-1][0]
            raise self._unavailable(f"The database cannot be used: {name} is immutable (chattr +i).")

    def _lost(self, what: str) -> None:
        """The database file is gone (or another file is at its path): rescue its contents, refuse from now on."""
        rescued = self._rescue()
        self._gone = (
            f"The database cannot be used: {what} while the proxy was serving it; nothing is accepted until "
            f"the proxy is restarted. {rescued}"
        )
        log.error("%s", self._gone)
        self._fault = self._gone
        raise StorageUnavailable(self._gone)

    def _rescue(self) -> str:
        """Copy the database as this connection still sees it (deleted files stay readable while open)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        copy = f"{self.path}.rescued-{stamp}"
        try:
            with contextlib.closing(sqlite3.connect(copy)) as dest:
                typing.cast(sqlite3.Connection, self.db).backup(dest)
            try:
                os.link(copy, self.path)  # back at its path, unless another file is there by now
            except FileExistsError:
                return f"Everything written until then was saved to {copy}."
            os.unlink(copy)
            return f"Everything written until then was restored to {self.path}."
        except (OSError, sqlite3.Error) as exc:
            return f"Saving what was written to {copy} failed too ({exc})."

    def _fault_from(self, exc: sqlite3.Error) -> Exception:
        code = fault_code(exc)
        if code not in STORAGE_FAULTS:
            return exc
        return self._unavailable(f"The database cannot be written: {STORAGE_FAULTS[code]} ({exc}).")

    def _unavailable(self, message: str) -> StorageUnavailable:
        if message != self._fault:  # once per fault, not once per request
            log.error("%s %s", message, self.path)
            self._fault = message
        return StorageUnavailable(message)

    def _recovered(self) -> None:
        log.warning("the database %s can be written again", self.path)
        self._fault = None

    def maintain(self) -> None:
        """About once a second, on the event loop: notice a database moved away (PostgreSQL: a connection
        dropped, replaced here rather than in a request, with its servers lock), retry, keep the reserve."""
        if self._pg is not None and not self.db.in_transaction:
            with contextlib.suppress(StorageUnavailable):
                self._check()
        if self._gone is None and self._watched:
            try:
                same = os.path.samestat(os.stat(self.path), os.fstat(self._watched[0][1]))
            except FileNotFoundError:
                same = False
            if not same:
                with contextlib.suppress(StorageUnavailable):
                    self._lost(f"{self.path} was deleted, moved or replaced")
        if self._unrecorded and self._gone is None:
            self.retry_unrecorded()
        self._keep_reserve()

    def reserve_space(self, size: int) -> None:
        """Keep `size` bytes in `<database>-reserve`, given back on a full disk to record running responses."""
        self._reserve_bytes = size if self.path != ":memory:" and self._pg is None else 0
        self._keep_reserve()

    def _keep_reserve(self) -> None:
        reserve = self.path + "-reserve"
        if not self._reserve_bytes or self._gone is not None or os.path.exists(reserve):
            return
        try:
            fd = os.open(reserve + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self._reserve_bytes)
            finally:
                os.close(fd)
            os.replace(reserve + ".tmp", reserve)
        except OSError:  # no space yet: the next round tries again
            with contextlib.suppress(OSError):
                os.unlink(reserve + ".tmp")

    def _use_reserve(self) -> bool:
        """Give the reserve back to the filesystem; True if there was one."""
        try:
            os.unlink(self.path + "-reserve")
        except OSError:
            return False
        log.warning("the disk is full: gave back the %d-byte reserve to record running responses",
                    self._reserve_bytes)  # fmt: skip
        return True

    def _record(self, response_id: str, write: Callable[[], R]) -> R:
        """An outcome: on a full disk, try again with the reserve; if it still fails, keep it for later."""
        try:
            return write()
        except StorageUnavailable as exc:
            if not (fault_code(exc) == sqlite3.SQLITE_FULL and self._use_reserve()):
                self._unrecorded[response_id] = write
                raise
        try:
            return write()
        except StorageUnavailable:
            self._unrecorded[response_id] = write
            raise

    def retry_unrecorded(self, *, use_reserve: bool = False) -> int:
        """Write the outcomes that failed earlier, oldest first; return how many are still waiting."""
        for response_id, write in list(self._unrecorded.items()):
            try:
                write()
            except StorageUnavailable as exc:
                if not (use_reserve and fault_code(exc) == sqlite3.SQLITE_FULL and self._use_reserve()):
                    break
                try:
                    write()
                except StorageUnavailable:
                    break
            del self._unrecorded[response_id]
            log.warning("recorded the outcome of %s, which had failed earlier", response_id)
        return len(self._unrecorded)

    def checkpoint_in_background(self) -> bool:
        """Stop SQLite's own WAL checkpoints on this connection; the caller runs `checkpoint_wal()`.

        An automatic checkpoint runs inside whichever commit fills the WAL and fsyncs the
        database: one request in about a hundred waited 6-10 ms for it on the event loop.
        Returns False (and changes nothing) if the database has no WAL, as `:memory:` has not.
        """
        if self._pg is not None or self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            return False
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self.db.execute(f"PRAGMA journal_size_limit={WAL_KEEP_BYTES}")  # this connection starts the WAL over
        return True

    def checkpoint_wal(self) -> int:
        """Copy the WAL into the database (PASSIVE: never waits for, or blocks, the request path);
        return the WAL's length in bytes (what it holds since it last started over).

        Its own connection, so it may run in a worker thread; sqlite3 releases the GIL meanwhile.
        It only looks at the files (`maintain()`, on the event loop, acts on what it finds), and
        opens the path with `mode=rw`: a deleted database must not come back empty.
        """
        for name, fd in self._watched:
            if self._gone is not None or os.fstat(fd).st_nlink == 0 or _immutable(fd):
                raise StorageUnavailable(f"not checkpointing: {name} is gone or immutable")
        try:
            if self._watched and not os.path.samestat(os.stat(self.path), os.fstat(self._watched[0][1])):
                raise StorageUnavailable(f"not checkpointing: {self.path} is another file now")
            uri = Path(self.path).absolute().as_uri() + "?mode=rw"
            with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as db:
                frames: int = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
                page_size: int = db.execute("PRAGMA page_size").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise self._checkpoint_failed(exc) from exc
        return max(frames, 0) * (page_size + WAL_FRAME_HEADER)

    @_guarded
    def restart_wal(self) -> None:
        """After `checkpoint_wal`, copy what was written while it copied, on this connection: every
        commit of this process is this connection's, on the event loop, so none lands meanwhile,
        the WAL is wholly copied, and the next commit starts it over (unless another process
        writes to the same file, or reads an older snapshot: then it waits for a quieter moment).
        It blocks the event loop for that copy and its fsyncs (35-40 ms under that load on a
        shared 2-core machine): only past WAL_RESTART_BYTES. Any failure is StorageUnavailable,
        as `checkpoint_wal`'s: the next round tries again.
        """
        try:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise self._checkpoint_failed(exc) from exc

    def _checkpoint_failed(self, exc: Exception) -> StorageUnavailable:
        return StorageUnavailable(f"checkpointing {self.path} failed: {exc}")

    @property
    def shared(self) -> bool:
        """PostgreSQL: other proxy processes (replicas) may use this database too."""
        return self._pg is not None

    @property
    def total_changes(self) -> int:
        return self.db.total_changes

    @contextlib.contextmanager
    def transaction(self) -> Iterator[engines.Connection]:
        self.db.execute(self.dialect.begin)
        try:
            yield self.db
        except BaseException:
            if self.db.in_transaction:  # SQLite rolls back by itself after some errors (SQLITE_FULL)
                self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except Exception:
            if self.db.in_transaction:  # a failed COMMIT leaves the transaction open
                self.db.execute("ROLLBACK")
            raise

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded, in one transaction; return their names.

        The transaction excludes another process migrating the same database (SQLite's write
        lock; PostgreSQL's advisory lock), which then finds them recorded.
        """
        applied = []
        with self.transaction() as db:
            if self.dialect.lock_migrations:
                db.execute(self.dialect.lock_migrations)
            db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = {r[0] for r in db.execute("SELECT name FROM migrations")}
            for name, fn in migrations.MIGRATIONS:
                if name in done:
                    continue
                fn(migrations.Schema(db, self.dialect))
                db.execute("INSERT INTO migrations VALUES (?, ?)", (name, now_iso()))
                applied.append(name)
        return applied

    def open_for_serving(self) -> bool:
        """Register this process as a server of the database; True if no other one is running.

        Each serving process holds a shared `flock` on `<database>-servers.lock` for its
        lifetime (the OS drops it when the process dies, however it dies). Trying for an
        exclusive lock first tells whether another live proxy uses the file, whose running
        responses must not be taken for a crash's leftovers. Without `fcntl` (Windows) and
        for `:memory:`, the answer is always True. On PostgreSQL the lock is an advisory lock
        of the connection's session (the server drops it when the connection ends), taken
        again (shared) on each reconnect.
        """
        if self._pg is not None:
            return self._open_for_serving_postgres(self._pg)
        if fcntl is None or self.path == ":memory:" or self._servers_lock is not None:
            return True
        try:
            fd = os.open(self.path + "-servers.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StorageUnavailable(f"cannot open {self.path}-servers.lock: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        # To shared (not atomic: another process starting meanwhile also sees itself alone,
        # which is harmless, as neither has a running response yet).
        fcntl.flock(fd, fcntl.LOCK_SH)
        self._servers_lock = fd
        return alone

    def _open_for_serving_postgres(self, pg: engines.PostgresConnection) -> bool:
        if self._serving:
            return True

        def shared(conn: Any) -> None:
            conn.execute("SELECT pg_advisory_lock_shared(%s)", (engines.SERVERS_LOCK,))

        try:
            self._check()
            row = pg.execute("SELECT pg_try_advisory_lock(?)", (engines.SERVERS_LOCK,)).fetchone()
            alone = row is not None and bool(row[0])
            pg.execute("SELECT pg_advisory_lock_shared(?)", (engines.SERVERS_LOCK,))
            if alone:
                pg.execute("SELECT pg_advisory_unlock(?)", (engines.SERVERS_LOCK,))
        except Exception as exc:
            if (reason := engines.fault(exc)) is None:
                raise
            raise self._unavailable(f"The database cannot be used: {reason} ({engines.one_line(exc)}).") from exc
        pg.on_connect.append(shared)
        self._serving = True
        return alone

    @_guarded
    def ping(self) -> None:
        """A round trip to the database (readiness): StorageUnavailable if it cannot be used."""
        self.db.execute("SELECT 1").fetchone()

    @_guarded
    def recover_interrupted(self) -> int:
        """Mark responses left `in_progress` by a crash as interrupted; return how many."""
        with self.transaction() as db:
            rows = db.execute("SELECT id, assistant_message_id FROM responses WHERE status = 'in_progress'").fetchall()
            for row in rows:
                if row["assistant_message_id"]:
                    self._merge_metadata(row["assistant_message_id"], {"interrupted": True, "in_progress": False})
                db.execute(
                    "UPDATE responses SET status = 'interrupted', finished_at = ? WHERE id = ?",
                    (now_iso(), row["id"]),
                )
        return len(rows)

    # -- threads -------------------------------------------------------------------------

    @_guarded
    def create_thread(self, owner: str, **fields: Any) -> dict[str, Any]:
        thread = self.get_thread(self.insert_thread(owner, **fields))
        assert thread is not None
        return thread

    @_guarded
    def insert_thread(self, owner: str, thread_id: str | None = None, **fields: Any) -> str:
        ts = now_iso()
        tid = thread_id or new_id("thrd")
        self.db.execute(
            "INSERT INTO threads (id, owner, organization_id, title, metadata, assistant_id,"
            " visible_in_ui, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tid,
                owner,
                fields.get("organization_id"),
                fields.get("title"),
                json.dumps(fields.get("metadata") or {}),
                fields.get("assistant_id"),
                1 if fields.get("visible_in_ui", True) is not False else 0,
                ts,
                ts,
            ),
        )
        return tid

    @_guarded
    def get_thread(self, thread_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            f"SELECT t.*, {MESSAGE_COUNT} FROM threads t WHERE t.id = ?",
            (thread_id,),
        ).fetchone()
        return _thread(row) if row else None

    @_guarded
    def update_thread(self, thread_id: str, **fields: Any) -> None:
        sets, args = [], []
        for key, value in fields.items():
            if key not in THREAD_FIELDS and key not in ("is_pinned", "pinned_at", "last_model_used"):
                raise KeyError(key)
            if key == "metadata":
                value = json.dumps(value or {})
            elif key in ("visible_in_ui", "is_pinned"):
                value = 1 if value else 0
            sets.append(f"{key} = ?")
            args.append(value)
        sets.append("updated_at = ?")
        args.extend([now_iso(), thread_id])
        self.db.execute(f"UPDATE threads SET {', '.join(sets)} WHERE id = ?", args)

    @_guarded
    def delete_thread(self, thread_id: str) -> None:
        self.db.execute("DELETE FROM threads WHERE id = ?", (thread_id,))

    @_guarded
    def delete_threads(self, owner: str, organization_id: str | None, keep: set[str]) -> int:
        """Delete the owner's threads (optionally of one organization), except those in `keep`."""
        sql, args = "SELECT id FROM threads WHERE owner = ?", [owner]
        if organization_id:
            sql += " AND organization_id = ?"
            args.append(organization_id)
        ids = [r[0] for r in self.db.execute(sql, args) if r[0] not in keep]
        with self.transaction() as db:
            db.executemany("DELETE FROM threads WHERE id = ?", [(i,) for i in ids])
        return len(ids)

    @_guarded
    def list_threads(
        self,
        owner: str,
        *,
        limit: int,
        order: str,
        after: str | None,
        before: str | None,
        filters: dict[str, Any],
    ) -> Page:
        where, args = ["t.owner = ?"], [owner]
        args_any: list[Any] = args
        for key, value in filters.items():
            where.append(f"t.{key} = ?")
            args_any.append(int(value) if isinstance(value, bool) else value)
        page = self._page("threads", where, args_any, limit, order, after, before)
        return Page([_thread(r) for r in page.rows], page.has_more)

    @_guarded
    def count_threads(self, owner: str, filters: dict[str, Any]) -> int:
        where, args = ["owner = ?"], list[Any]([owner])
        for key, value in filters.items():
            where.append(f"{key} = ?")
            args.append(int(value) if isinstance(value, bool) else value)
        return int(self.db.execute(f"SELECT COUNT(*) FROM threads WHERE {' AND '.join(where)}", args).fetchone()[0])

    def _page(
        self,
        table: str,
        where: list[str],
        args: list[Any],
        limit: int,
        order: str,
        after: str | None,
        before: str | None,
    ) -> Page:
        """One page in `order` by seq; `after`/`before` are ids of rows of the same table."""
        desc = order == "desc"
        forward_op, backward_op = ("<", ">") if desc else (">", "<")
        sort = "DESC" if desc else "ASC"
        if after is not None:
            where.append(f"t.seq {forward_op} (SELECT seq FROM {table} WHERE id = ?)")
            args.append(after)
        reverse = False
        if before is not None:
            # Items just before the cursor: read backwards from it, then flip the page.
            where.append(f"t.seq {backward_op} (SELECT seq FROM {table} WHERE id = ?)")
            args.append(before)
            sort = "ASC" if desc else "DESC"
            reverse = True
        extra = f", {MESSAGE_COUNT}" if table == "threads" else ""
        cursor = self.db.execute(
            f"SELECT t.*{extra} FROM {table} t WHERE {' AND '.join(where)} ORDER BY t.seq {sort} LIMIT ?",
            [*args, limit + 1],
        )
        # Rows are read one by one, and the page ends early once it holds `max_bytes` of text
        # (at least one row): a page of huge messages must not take the memory and the event
        # loop of everyone else. `has_more` then tells the client to ask for the rest.
        rows: list[Any] = []
        size, has_more = 0, False
        for row in cursor:
            if len(rows) == limit or (rows and size > self.max_page_bytes):
                has_more = True
                break
            rows.append(row)
            size += sum(len(v) for v in row if isinstance(v, str))
        cursor.close()
        if reverse:
            rows.reverse()
        return Page([dict(r) for r in rows], has_more)

    # -- messages ------------------------------------------------------------------------

    @_guarded
    def add_message(
        self,
        thread_id: str,
        role: str,
        content: str,
        metadata: dict[str, Any] | None = None,
        response_id: str | None = None,
    ) -> str:
        ts = now_iso()
        mid = self._insert_message(thread_id, role, content, metadata, response_id, ts)
        self.db.execute("UPDATE threads SET last_message_at = ?, updated_at = ? WHERE id = ?", (ts, ts, thread_id))
        return mid

    def _insert_message(
        self,
        thread_id: str,
        role: str,
        content: str,
        metadata: dict[str, Any] | None,
        response_id: str | None,
        ts: str,
        message_id: str | None = None,
    ) -> str:
        """The message row alone: the caller updates the thread's `last_message_at`."""
        mid = message_id or new_id("msg")
        self.db.execute(
            "INSERT INTO messages (id, thread_id, role, content, metadata, response_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (mid, thread_id, role, content, json.dumps(metadata or {}), response_id, ts),
        )
        return mid

    @_guarded
    def get_message(self, thread_id: str, message_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM messages WHERE id = ? AND thread_id = ?", (message_id, thread_id)
        ).fetchone()
        return _message(row) if row else None

    @_guarded
    def update_message(self, message_id: str, content: str | None, metadata: dict[str, Any] | None) -> None:
        """Set the content; merge `metadata` into the stored one (a key set to None is removed)."""
        with self.transaction() as db:
            sets, args = ["updated_at = ?"], [now_iso()]
            if content is not None:
                sets.append("content = ?")
                args.append(content)
            if metadata:
                row = db.execute("SELECT metadata FROM messages WHERE id = ?", (message_id,)).fetchone()
                merged = {**(json.loads(row[0]) if row else {}), **metadata}
                sets.append("metadata = ?")
                args.append(json.dumps({k: v for k, v in merged.items() if v is not None}))
            db.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id = ?", [*args, message_id])

    @_guarded
    def delete_message(self, message_id: str) -> None:
        self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    @_guarded
    def list_messages(
        self,
        thread_id: str,
        *,
        limit: int,
        order: str,
        after: str | None,
        before: str | None,
        include_deleted: bool = False,
    ) -> Page:
        where = ["t.thread_id = ?"] if include_deleted else ["t.thread_id = ?", "t.deleted_at IS NULL"]
        page = self._page("messages", where, [thread_id], limit, order, after, before)
        return Page([_message(r) for r in page.rows], page.has_more)

    @_guarded
    def history(self, thread_id: str, before: tuple[str, bool] | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        """(role, content, metadata) of the thread's messages, oldest first, without soft-deleted
        ones; with `before = (message_id, inclusive)`, only those before that message (or up to it)."""
        sql = "SELECT role, content, metadata FROM messages WHERE thread_id = ? AND deleted_at IS NULL"
        args: list[Any] = [thread_id]
        if before is not None:
            sql += f" AND seq {'<' if before[1] else '<='} (SELECT seq FROM messages WHERE id = ?)"
            args.append(before[0])
        return [(r[0], r[1], json.loads(r[2] or "{}")) for r in self.db.execute(sql + " ORDER BY seq", args)]

    def _merge_metadata(self, message_id: str, changes: dict[str, Any]) -> None:
        row = self.db.execute("SELECT metadata FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is not None:
            meta = {**json.loads(row[0]), **changes}
            self.db.execute("UPDATE messages SET metadata = ? WHERE id = ?", (json.dumps(meta), message_id))

    # -- responses (one per prediction) --------------------------------------------------

    def begin_response(self, *args: Any, **kwargs: Any) -> tuple[str, str, list[str], bool]:
        """`new_response(...)` (the same arguments), stored at once: for callers with no prediction
        to send first (the tests, which store a request directly).

        Returns (thread_id, response_id, message ids, whether the thread was created).
        """
        new = new_response(*args, **kwargs)
        self.store_response(new)
        return new.thread_id, new.response_id, new.message_ids, new.thread_created

    @_guarded
    def store_response(self, new: NewResponse) -> None:
        """Store an accepted request in one transaction: its thread (if new), the input messages,
        and an `in_progress` response row; with `new.cut`, the messages it replaces are soft-deleted."""
        try:
            self._store_response(new)
        except Exception as exc:  # PostgreSQL: another replica runs a response on this thread
            if engines.unique_violation(exc, "responses_one_running"):
                raise StreamAlreadyActive(
                    "A response is already streaming on this thread.", {"thread_id": new.thread_id}
                ) from exc
            raise

    def _store_response(self, new: NewResponse) -> None:
        rid, thread_id = new.response_id, new.thread_id
        with self.transaction():
            if new.thread_created:
                self.insert_thread(new.owner, thread_id=thread_id, **(new.thread_fields or {}))
            elif new.cut is not None:  # edit (from the message on), branch or reset (after it)
                message_id, inclusive = new.cut
                self.db.execute(
                    f"UPDATE messages SET deleted_at = ?, deleted_by = ? WHERE thread_id = ? AND deleted_at IS NULL"
                    f" AND seq {'>=' if inclusive else '>'} (SELECT seq FROM messages WHERE id = ?)",
                    (now_iso(), rid, thread_id, message_id),
                )
            # One UPDATE of the thread for all of it, not one per message and one for the model
            # (issue 18: with PostgreSQL this transaction is on the way to the first token).
            ts = now_iso()
            for mid, (role, content, metadata) in zip(new.message_ids, new.inputs, strict=True):
                self._insert_message(thread_id, role, content, metadata, rid, ts, mid)
            moved = ts if new.message_ids else None  # no message: the thread's times stay
            self.db.execute(
                "UPDATE threads SET last_model_used = ?, last_message_at = COALESCE(?, last_message_at),"
                " updated_at = COALESCE(?, updated_at) WHERE id = ?",
                (new.model, moved, moved, thread_id),
            )
            self.db.execute(
                "INSERT INTO responses (id, thread_id, owner, model, status, user_message_id, created_at,"
                " replica_id, thread_created, accepted_epoch)"
                f" VALUES (?, ?, ?, ?, 'in_progress', ?, ?, ?, ?, {self.dialect.clock})",
                (rid, thread_id, new.owner, new.model, new.message_ids[-1] if new.message_ids else None, ts,
                 self.replica_id, int(new.thread_created)),
            )  # fmt: skip

    @_guarded
    def get_response(self, response_id: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM responses WHERE id = ?", (response_id,)).fetchone()
        return dict(row) if row else None

    def checkpoint(
        self, response_id: str, thread_id: str, text: str, tool_calls: list[dict[str, Any]] | None = None
    ) -> bool:
        """Save the partial text (and the tool calls so far) of a running prediction, as an
        in-progress assistant message: a crash keeps them. See `checkpoints`."""
        return self.checkpoints([Checkpoint(response_id, thread_id, text, tool_calls)])

    def checkpoints(self, saves: Sequence[Checkpoint]) -> bool:
        """Save the partial answers of several running predictions in one transaction.

        One commit for all of them: at 128 streams a commit per stream and second was 128
        commits a second, each with its file checks, locks and WAL pages.
        False if the storage failed (logged once, not per call): this copy only serves crash
        recovery, and a stream that LM Studio can still finish must not stop for it.
        """
        try:
            self._checkpoints(saves)
        except StorageUnavailable:
            return False
        return True

    @_guarded
    def _checkpoints(self, saves: Sequence[Checkpoint]) -> None:
        with self.transaction() as db:
            for response_id, thread_id, text, tool_calls in saves:
                row = db.execute("SELECT assistant_message_id FROM responses WHERE id = ?", (response_id,)).fetchone()
                metadata: dict[str, Any] = {"in_progress": True, **({"tool_calls": tool_calls} if tool_calls else {})}
                if row is not None and row[0]:
                    db.execute(
                        "UPDATE messages SET content = ?, metadata = ? WHERE id = ?",
                        (text, json.dumps(metadata), row[0]),
                    )
                else:
                    mid = self.add_message(thread_id, "assistant", text, metadata, response_id=response_id)
                    db.execute("UPDATE responses SET assistant_message_id = ? WHERE id = ?", (mid, response_id))

    @_guarded
    def end_round(self, response_id: str, thread_id: str, text: str, metadata: dict[str, Any]) -> None:
        """A model round that called tools the proxy runs is over: its assistant message is
        written whole, and the next round's text goes into a new message."""
        row = self.db.execute("SELECT assistant_message_id FROM responses WHERE id = ?", (response_id,)).fetchone()
        with self.transaction() as db:
            if row is not None and row[0]:
                db.execute(
                    "UPDATE messages SET content = ?, metadata = ? WHERE id = ?", (text, json.dumps(metadata), row[0])
                )
            else:
                self.add_message(thread_id, "assistant", text, metadata, response_id=response_id)
            db.execute("UPDATE responses SET assistant_message_id = NULL WHERE id = ?", (response_id,))

    @_guarded
    def add_tool_result(self, response_id: str, thread_id: str, text: str, metadata: dict[str, Any]) -> str:
        """The result of a tool the proxy ran, as a `tool` message of the response."""
        with self.transaction():
            return self.add_message(thread_id, "tool", text, metadata, response_id=response_id)

    def finish_response(
        self,
        response_id: str,
        *,
        status: str,
        usage: Usage,
        duration: float,
        text: str | None,
        metadata: dict[str, Any] | None = None,
        cancel_mode: str | None = None,
        error: str | None = None,
        delete_thread_if_empty: bool = False,
    ) -> str | None:
        """End a response in one transaction and return the assistant message id.

        `text is None` deletes every message of the response (quick_edit); otherwise the
        assistant message is written with `text` and `metadata`. On StorageUnavailable the
        outcome is kept and written later (`retry_unrecorded`).
        """
        write = functools.partial(
            self._finish_response, response_id, status=status, usage=usage, duration=duration, text=text,
            metadata=metadata, cancel_mode=cancel_mode, error=error,
            delete_thread_if_empty=delete_thread_if_empty,
        )  # fmt: skip
        return self._record(response_id, write)

    @_guarded
    def _finish_response(
        self,
        response_id: str,
        *,
        status: str,
        usage: Usage,
        duration: float,
        text: str | None,
        metadata: dict[str, Any] | None,
        cancel_mode: str | None,
        error: str | None,
        delete_thread_if_empty: bool,
    ) -> str | None:
        row = self.db.execute(
            "SELECT thread_id, assistant_message_id FROM responses WHERE id = ?", (response_id,)
        ).fetchone()
        if row is None:
            return None
        thread_id: str = row[0]
        mid: str | None = row[1]
        with self.transaction() as db:
            if text is None:
                self._delete_response_messages(response_id, thread_id, delete_thread_if_empty)
                mid = None
            elif mid:
                db.execute(
                    "UPDATE messages SET content = ?, metadata = ? WHERE id = ?",
                    (text, json.dumps(metadata or {}), mid),
                )
            elif db.execute("SELECT 1 FROM threads WHERE id = ?", (thread_id,)).fetchone():
                mid = self.add_message(thread_id, "assistant", text, metadata, response_id)
            db.execute(
                f"UPDATE responses SET {USAGE_COLUMNS}, status = ?, cancel_mode = ?, duration_seconds = ?,"
                " assistant_message_id = ?, error = ?, finished_at = ? WHERE id = ?",
                (*_usage_values(usage), status, cancel_mode, duration, mid, error, now_iso(), response_id),
            )
        return mid

    @_guarded
    def update_usage(self, response_id: str, usage: Usage) -> None:
        """LM Studio's own counts for a response whose outcome was recorded before they came."""
        with self.transaction() as db:
            db.execute(f"UPDATE responses SET {USAGE_COLUMNS} WHERE id = ?", (*_usage_values(usage), response_id))

    @_guarded
    def apply_late_cancel(self, response_id: str, mode: str, *, delete_thread_if_empty: bool) -> None:
        """A cancel for a response already stopped by a disconnect: give it that cancel's mode."""
        row = self.db.execute(
            "SELECT thread_id, assistant_message_id FROM responses WHERE id = ?", (response_id,)
        ).fetchone()
        if row is None:
            return
        thread_id, mid = row[0], row[1]
        with self.transaction() as db:
            if mode == "quick_edit":
                self._delete_response_messages(response_id, thread_id, delete_thread_if_empty)
                mid = None
            elif mid:
                self._merge_metadata(mid, {"cancel_mode": mode})
            db.execute(
                "UPDATE responses SET cancel_mode = ?, assistant_message_id = ? WHERE id = ?",
                (mode, mid, response_id),
            )

    def _delete_response_messages(self, response_id: str, thread_id: str, delete_thread_if_empty: bool) -> None:
        """quick_edit: the messages of one response go; its thread too if it made it and is now empty."""
        self.db.execute("DELETE FROM messages WHERE response_id = ?", (response_id,))
        # What this request's edit, branch or reset soft-deleted comes back: as if never sent.
        self.db.execute("UPDATE messages SET deleted_at = NULL, deleted_by = NULL WHERE deleted_by = ?", (response_id,))
        if delete_thread_if_empty:
            self.db.execute(
                "DELETE FROM threads WHERE id = ? AND NOT EXISTS (SELECT 1 FROM messages WHERE thread_id = ?)",
                (thread_id, thread_id),
            )

    @_guarded
    def list_usage(self, owner: str, thread_id: str | None, limit: int) -> Page:
        where, args = ["owner = ?"], [owner]
        if thread_id:
            where.append("thread_id = ?")
            args.append(thread_id)
        rows = self.db.execute(
            f"SELECT * FROM responses WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
            [*args, limit + 1],
        ).fetchall()
        return Page([dict(r) for r in rows[:limit]], len(rows) > limit)

    # -- replicas (PostgreSQL: several proxies on one database; see proxy/replicas.py) ----
    #
    # Times here are the database's clock (`Dialect.clock`, seconds since the epoch), never a
    # replica's: leases and cancel modes must mean the same on every replica.

    @_guarded
    def register_replica(self, replica_id: str, lease_seconds: float, host: str, pid: int) -> None:
        """Record this process as a replica with a lease; responses it begins from now on are its own."""
        self.replica_id = replica_id
        clock = self.dialect.clock
        self.db.execute(
            f"INSERT INTO replicas (id, host, pid, started_at, lease_until) VALUES (?, ?, ?, {clock}, {clock} + ?)"
            " ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid",
            (replica_id, host, pid, lease_seconds),
        )

    @_guarded
    def renew_lease(self, replica_id: str, lease_seconds: float) -> bool:
        """Extend the replica's lease; False if it had run out (others may have taken over its responses)."""
        clock = self.dialect.clock
        with self.transaction() as db:
            row = db.execute(f"SELECT lease_until > {clock} FROM replicas WHERE id = ? FOR UPDATE", (replica_id,))
            alive = row.fetchone()
            if alive is None:
                db.execute(
                    f"INSERT INTO replicas (id, host, pid, started_at, lease_until) VALUES (?, '', 0, {clock},"
                    f" {clock} + ?)",
                    (replica_id, lease_seconds),
                )
            else:
                db.execute(f"UPDATE replicas SET lease_until = {clock} + ? WHERE id = ?", (lease_seconds, replica_id))
        return alive is not None and bool(alive[0])

    @_guarded
    def retire_replica(self, replica_id: str) -> None:
        """The replica stops: its lease ends now (what it leaves running is recovered at once)."""
        self.db.execute("DELETE FROM replicas WHERE id = ?", (replica_id,))

    @_guarded
    def recover_dead_replicas(self) -> list[str]:
        """End the responses left running by replicas whose lease has run out; return their ids.

        A response with a stop requested by a cancel ends as that cancel says, from its
        checkpointed text (quick_edit: its messages go; keep_partial: the text stays, marked
        cancelled and interrupted); any other ends `interrupted` with its text kept, as after a
        crash on SQLite. Rows another replica is recovering at the same moment are skipped.
        """
        clock = self.dialect.clock
        with self.transaction() as db:
            rows = db.execute(
                "SELECT r.id, r.thread_id, r.assistant_message_id, r.stop_request, r.cancel_body, r.thread_created"
                " FROM responses r WHERE r.status = 'in_progress' AND NOT EXISTS (SELECT 1 FROM replicas p"
                f" WHERE p.id = r.replica_id AND p.lease_until > {clock}) FOR UPDATE OF r SKIP LOCKED"
            ).fetchall()
            for row in rows:
                self._end_orphan(row)
            db.execute(f"DELETE FROM replicas WHERE lease_until < {clock} - 86400")
        return [row["id"] for row in rows]

    def _end_orphan(self, row: Any) -> None:
        rid, mid = row["id"], row["assistant_message_id"]
        body = json.loads(row["cancel_body"]) if row["stop_request"] == "cancel" and row["cancel_body"] else None
        if body is None:
            if mid:
                self._merge_metadata(mid, {"interrupted": True, "in_progress": False})
            self.db.execute(
                "UPDATE responses SET status = 'interrupted', finished_at = ? WHERE id = ?", (now_iso(), rid)
            )
            return
        mode = body["cancel_mode"]
        if mode == "quick_edit":
            self._delete_response_messages(rid, row["thread_id"], bool(row["thread_created"]))
            mid = None
        else:
            length = self.db.execute("SELECT LENGTH(content) FROM messages WHERE id = ?", (mid,)).fetchone()
            meta = {"cancelled": True, "cancel_mode": mode, "partial_content_length": int(length[0]) if length else 0,
                    "interrupted": True, "in_progress": False}  # fmt: skip
            if length is not None:
                self._merge_metadata(mid, meta)
            elif self.db.execute("SELECT 1 FROM threads WHERE id = ?", (row["thread_id"],)).fetchone():
                mid = self.add_message(row["thread_id"], "assistant", "", meta, rid)
        self.db.execute(
            "UPDATE responses SET status = 'cancelled', cancel_mode = ?, stop_reason = 'userStopped',"
            " assistant_message_id = ?, finished_at = ? WHERE id = ?",
            (mode, mid, now_iso(), rid),
        )

    @_guarded
    def decide_cancel(
        self,
        thread_id: str,
        owner: str,
        decide: Callable[[float, bool], tuple[str, dict[str, Any]]],
        remember_seconds: float,
    ) -> CancelTicket:
        """The cancel endpoint's decision on the thread's latest response, by the database's clock.

        In one transaction, with the response's row locked (so cancels from several replicas
        are ordered): a running response gets its stop request and the cancel's body (`decide`
        from the seconds since acceptance, or since acceptance until a disconnect stopped it),
        and its replica is woken (NOTIFY, sent at commit); a response stopped by a disconnect
        gets this cancel's mode applied now (as `apply_late_cancel`). The first body stored is
        the answer to every cancel after it.
        """
        clock = self.dialect.clock
        with self.transaction() as db:
            row = db.execute(
                "SELECT id, owner, status, replica_id, stop_request, stop_elapsed, cancel_body, cancel_mode, tools_ran,"
                f" ending, thread_created, assistant_message_id, {clock} - accepted_epoch AS elapsed,"
                f" {clock} - stop_epoch AS since_stop FROM responses WHERE thread_id = ? ORDER BY seq DESC LIMIT 1"
                " FOR UPDATE",
                (thread_id,),
            ).fetchone()
            if row is None:
                return CancelTicket("missing")
            rid, replica = row["id"], row["replica_id"]
            if row["owner"] != owner:
                return CancelTicket("forbidden")
            body = json.loads(row["cancel_body"]) if row["cancel_body"] else None
            if row["status"] == "in_progress":
                if body is not None or row["ending"] or row["stop_request"] not in (None, "disconnect"):
                    # Decided already (a cancel, or the stream's own end or shutdown): wait for its commit.
                    return CancelTicket("wait", rid, replica, body, decided=row["stop_request"] == "cancel")
                elapsed = row["stop_elapsed"] if row["stop_request"] == "disconnect" else row["elapsed"]
                mode, body = decide(float(elapsed or 0.0), bool(row["tools_ran"]))
                db.execute(
                    f"UPDATE responses SET stop_request = 'cancel', stop_epoch = COALESCE(stop_epoch, {clock}),"
                    " stop_elapsed = ?, cancel_body = ? WHERE id = ?",
                    (float(elapsed or 0.0), json.dumps(body), rid),
                )
                db.execute("SELECT pg_notify(?, ?)", (STOP_CHANNEL, replica or ""))
                return CancelTicket("wait", rid, replica, body, decided=True)
            recent = row["since_stop"] is not None and row["since_stop"] <= remember_seconds
            if row["status"] != "cancelled" or not recent:
                return CancelTicket("missing")
            if body is not None:
                return CancelTicket("answered", rid, replica, body)
            if row["cancel_mode"] != "disconnect":
                return CancelTicket("missing")  # stopped by a shutdown: nothing to cancel
            # The client disconnected first (as the seed's Stop button does), then cancelled.
            mode, body = decide(float(row["stop_elapsed"] or 0.0), bool(row["tools_ran"]))
            mid = row["assistant_message_id"]
            if mode == "quick_edit":
                self._delete_response_messages(rid, thread_id, bool(row["thread_created"]))
                mid = None
            elif mid:
                self._merge_metadata(mid, {"cancel_mode": mode})
            db.execute(
                "UPDATE responses SET cancel_mode = ?, assistant_message_id = ?, cancel_body = ? WHERE id = ?",
                (mode, mid, json.dumps(body), rid),
            )
            return CancelTicket("answered", rid, replica, body, late_mode=mode)

    @_guarded
    def response_state(self, response_id: str) -> tuple[str, bool]:
        """(status, whether the replica running it holds a live lease) of a response."""
        row = self.db.execute(
            "SELECT r.status, EXISTS (SELECT 1 FROM replicas p WHERE p.id = r.replica_id AND p.lease_until > "
            f"{self.dialect.clock}) FROM responses r WHERE r.id = ?",
            (response_id,),
        ).fetchone()
        return (str(row[0]), bool(row[1])) if row is not None else ("missing", False)

    @_guarded
    def note_stop(self, response_id: str, reason: str, elapsed: float) -> None:
        """A running response's own replica stops it (a disconnect, a shutdown), unless a cancel came first."""
        self.db.execute(
            f"UPDATE responses SET stop_request = ?, stop_elapsed = ?, stop_epoch = {self.dialect.clock}"
            " WHERE id = ? AND stop_request IS NULL",
            (reason, elapsed, response_id),
        )

    @_guarded
    def note_tools_ran(self, response_id: str) -> None:
        """A tool the proxy runs has started: a cancel from now on keeps the turn (keep_partial)."""
        self.db.execute("UPDATE responses SET tools_ran = 1 WHERE id = ?", (response_id,))

    @_guarded
    def claim_outcome(self, response_id: str, reason: str | None, elapsed: float) -> dict[str, Any] | None:
        """The owner is about to decide the outcome: from now on a cancel waits for it instead of
        stopping the response. Returns the stop request and cancel body a cancel stored first."""
        args: list[Any] = [response_id]
        if reason is None:
            sql = "UPDATE responses SET ending = 1 WHERE id = ?"
        else:
            sql = (
                "UPDATE responses SET ending = 1, stop_request = COALESCE(stop_request, ?), stop_elapsed ="
                f" COALESCE(stop_elapsed, ?), stop_epoch = COALESCE(stop_epoch, {self.dialect.clock}) WHERE id = ?"
            )
            args = [reason, elapsed, response_id]
        row = self.db.execute(sql + " RETURNING stop_request, cancel_body, stop_elapsed", args).fetchone()
        return dict(row) if row is not None else None

    @_guarded
    def stop_requests(self, replica_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(response id, cancel body) of the replica's running responses that a cancel asked to stop."""
        rows = self.db.execute(
            "SELECT id, cancel_body FROM responses WHERE replica_id = ? AND status = 'in_progress'"
            " AND stop_request = 'cancel' AND ending = 0 AND cancel_body IS NOT NULL",
            (replica_id,),
        )
        return [(r[0], json.loads(r[1])) for r in rows]

    @_guarded
    def notify_ended(self, response_id: str) -> None:
        """Wake the replicas whose cancel waits for this response's outcome (committed already)."""
        self.db.execute("SELECT pg_notify(?, ?)", (ENDED_CHANNEL, response_id))

    @_guarded
    def running_responses(self, owner: str) -> list[dict[str, Any]]:
        """The owner's running responses on every replica: thread_id, id, model, elapsed (seconds, by the
        database's clock), tools_ran, stop_request, partial (the checkpointed text's length)."""
        rows = self.db.execute(
            f"SELECT r.thread_id, r.id, r.model, {self.dialect.clock} - r.accepted_epoch AS elapsed, r.tools_ran,"
            " r.stop_request, COALESCE(LENGTH(m.content), 0) AS partial FROM responses r"
            " LEFT JOIN messages m ON m.id = r.assistant_message_id"
            " WHERE r.owner = ? AND r.status = 'in_progress' ORDER BY r.seq",
            (owner,),
        )
        return [dict(r) for r in rows]

    @_guarded
    def running_threads(self, thread_ids: Iterable[str]) -> set[str]:
        """Which of these threads have a running response (on any replica)."""
        ids = list(thread_ids)
        if not ids:
            return set()
        marks = ", ".join("?" * len(ids))
        rows = self.db.execute(
            f"SELECT thread_id FROM responses WHERE status = 'in_progress' AND thread_id IN ({marks})", ids
        )
        return {r[0] for r in rows}

    def open_listener(self, channels: Sequence[str]) -> Any:
        """PostgreSQL: a new connection LISTENing on `channels`, for a thread of its own."""
        if self._pg is None:
            raise RuntimeError("LISTEN needs PostgreSQL")
        return self._pg.listener(channels)

    # -- files (metadata; the bytes are on disk: proxy/files.py) -------------------------

    @_guarded
    def add_files(self, owner: str, organization_id: str, files: list[dict[str, Any]], status: str) -> None:
        """Record files in one transaction; each dict: id, filename, mime_type, size, sha256, expires_at."""
        ts = now_iso()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO files (id, owner, organization_id, filename, mime_type, size, sha256, status,"
                " expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (f["id"], owner, organization_id, f["filename"], f["mime_type"], f["size"], f.get("sha256"),
                     status, f.get("expires_at"), ts)
                    for f in files
                ],
            )  # fmt: skip

    @_guarded
    def get_file(self, owner: str | None, file_id: str, status: str | None = "ready") -> dict[str, Any] | None:
        """A file's row if it is the owner's (any owner's with None) and has `status` (any with None)."""
        sql, args = "SELECT * FROM files WHERE id = ?", [file_id]
        if owner is not None:
            sql += " AND owner = ?"
            args.append(owner)
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        row = self.db.execute(sql, args).fetchone()
        return dict(row) if row else None

    @_guarded
    def list_files(self, owner: str, *, offset: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """A page of the owner's ready files, newest first, and how many there are in all."""
        rows = self.db.execute(
            "SELECT * FROM files WHERE owner = ? AND status = 'ready' ORDER BY seq DESC LIMIT ? OFFSET ?",
            (owner, limit, offset),
        ).fetchall()
        total = self.db.execute("SELECT COUNT(*) FROM files WHERE owner = ? AND status = 'ready'", (owner,))
        return [dict(r) for r in rows], int(total.fetchone()[0])

    @_guarded
    def file_bytes(self, owner: str) -> int:
        """Bytes the owner's files take or have reserved (pending uploads count their declared size)."""
        return int(self.db.execute("SELECT COALESCE(SUM(size), 0) FROM files WHERE owner = ?", (owner,)).fetchone()[0])

    @_guarded
    def update_file(self, file_id: str, **fields: Any) -> None:
        sets = [f"{key} = ?" for key in fields if key in ("mime_type", "size", "sha256", "status", "expires_at")]
        if len(sets) != len(fields):
            raise KeyError(", ".join(fields))
        self.db.execute(f"UPDATE files SET {', '.join(sets)} WHERE id = ?", [*fields.values(), file_id])

    @_guarded
    def delete_files(self, owner: str, file_ids: list[str] | None = None) -> list[str]:
        """Delete the owner's files (all of them with None); return the ids deleted."""
        sql, args = "SELECT id FROM files WHERE owner = ?", [owner]
        ids = [r[0] for r in self.db.execute(sql, args)]
        if file_ids is not None:
            ids = [i for i in ids if i in set(file_ids)]
        with self.transaction() as db:
            db.executemany("DELETE FROM files WHERE id = ?", [(i,) for i in ids])
        return ids

    @_guarded
    def expired_uploads(self, owner: str, now: int) -> list[str]:
        """The owner's upload URLs that expired before their bytes were registered."""
        rows = self.db.execute(
            "SELECT id FROM files WHERE owner = ? AND status != 'ready' AND expires_at < ?", (owner, now)
        )
        return [r[0] for r in rows]

    @_guarded
    def setting(self, name: str) -> str:
        return str(self.db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()[0])

    # -- assistants, model usage (v5's assistants group, /v1/models) -----------------------

    @_guarded
    def create_assistant(self, owner: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Store a new assistant for `owner`; `fields` are columns (see `ASSISTANT_FIELDS`)."""
        now = int(time.time())
        aid = new_id("asst")
        row = {k: v for k, v in fields.items() if k in ASSISTANT_FIELDS}
        cols = ["id", "owner", "created_at", "updated_at", *row]
        values = [aid, owner, now, now, *(_assistant_value(k, v) for k, v in row.items())]
        self.db.execute(f"INSERT INTO assistants ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", values)
        created = self.find_assistant(aid)
        assert created is not None
        return created

    @_guarded
    def find_assistant(self, assistant_id: str) -> dict[str, Any] | None:
        """An assistant whoever owns it (the API tells 403 from 404 with its `owner`)."""
        row = self.db.execute("SELECT * FROM assistants WHERE id = ?", (assistant_id,)).fetchone()
        return _assistant(row) if row else None

    def get_assistant(self, owner: str, assistant_id: str) -> dict[str, Any] | None:
        """The owner's assistant, or None (unknown, or another key's): for applying `assistant_id`.

        Keys: id, owner, organization_id, name, description, instructions, model (an LM Studio
        key or alias, or None: the default), temperature, top_p, max_tokens, output_mode
        (each None when not set), tool_configurations (dict or None), metadata, is_default,
        is_active, created_at, updated_at (epoch seconds).
        """
        found = self.find_assistant(assistant_id)
        return found if found is not None and found["owner"] == owner else None

    @_guarded
    def update_assistant(self, assistant_id: str, fields: dict[str, Any]) -> None:
        sets, args = [], []
        for key, value in fields.items():
            if key not in ASSISTANT_FIELDS:
                raise KeyError(key)
            sets.append(f"{key} = ?")
            args.append(_assistant_value(key, value))
        sets.append("updated_at = ?")
        args.extend([int(time.time()), assistant_id])
        self.db.execute(f"UPDATE assistants SET {', '.join(sets)} WHERE id = ?", args)

    @_guarded
    def delete_assistant(self, assistant_id: str) -> None:
        self.db.execute("DELETE FROM assistants WHERE id = ?", (assistant_id,))

    @_guarded
    def list_assistants(
        self,
        owner: str,
        *,
        organization_id: str | None,
        search: str | None,
        include_inactive: bool,
        sort_by: str,
        sort_order: str,
        limit: int,
        offset: int,
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the owner's assistants and how many match in all."""
        where, args = ["owner = ?"], list[Any]([owner])
        if organization_id:
            where.append("organization_id = ?")
            args.append(organization_id)
        if search:
            like = self.dialect.like
            where.append(f"(name {like} ? ESCAPE '\\' OR COALESCE(description, '') {like} ? ESCAPE '\\')")
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args.extend([pattern, pattern])
        if not include_inactive:
            where.append("is_active = 1")
        if sort_by not in ("created_at", "updated_at", "name"):
            raise KeyError(sort_by)
        direction = "ASC" if sort_order == "asc" else "DESC"
        sql = f"FROM assistants WHERE {' AND '.join(where)}"
        total = int(self.db.execute(f"SELECT COUNT(*) {sql}", args).fetchone()[0])
        rows = self.db.execute(
            f"SELECT * {sql} ORDER BY {sort_by} {direction}, seq {direction} LIMIT ? OFFSET ?", [*args, limit, offset]
        ).fetchall()
        return [_assistant(r) for r in rows], total

    @_guarded
    def last_used_models(self, owner: str) -> dict[str, str]:
        """model → when the owner's last response with it was created (ISO-8601)."""
        rows = self.db.execute(
            "SELECT model, MAX(created_at) FROM responses WHERE owner = ? AND model IS NOT NULL GROUP BY model",
            (owner,),
        )
        return {r[0]: r[1] for r in rows}


def _thread(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["metadata"] = json.loads(d["metadata"] or "{}")
    d["visible_in_ui"] = bool(d["visible_in_ui"])
    d["is_pinned"] = bool(d["is_pinned"])
    return d


def _message(row: Any) -> dict[str, Any]:
    d = dict(row)
    d["metadata"] = json.loads(d["metadata"] or "{}")
    del d["response_blocks"]  # a column no release ever wrote: blocks are rendered when asked for
    return d


ASSISTANT_FIELDS = (
    "organization_id", "name", "description", "instructions", "model", "temperature", "settings",
    "tool_configurations", "metadata", "is_default", "is_active",
)  # fmt: skip
_ASSISTANT_SETTINGS = ("top_p", "max_tokens", "output_mode")


def _assistant_value(key: str, value: Any) -> Any:
    if key in ("settings", "metadata"):
        return json.dumps(value or {})
    if key == "tool_configurations":
        return None if value is None else json.dumps(value)
    if key in ("is_default", "is_active"):
        return 1 if value else 0
    return value


def _assistant(row: Any) -> dict[str, Any]:
    d = dict(row)
    del d["seq"]
    settings = json.loads(d.pop("settings") or "{}")
    for name in _ASSISTANT_SETTINGS:
        d[name] = settings.get(name)
    d["metadata"] = json.loads(d["metadata"] or "{}")
    d["tool_configurations"] = json.loads(d["tool_configurations"]) if d["tool_configurations"] else None
    d["is_default"] = bool(d["is_default"])
    d["is_active"] = bool(d["is_active"])
    return d
