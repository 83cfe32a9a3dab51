"""The SQLite store: threads, messages and responses; the only module that writes SQL.

Design decisions (read before changing):
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
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy import migrations

try:
    import fcntl
except ImportError:  # Windows: no flock; see Store.open_for_serving
    fcntl = None  # type: ignore[assignment]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


THREAD_FIELDS = ("title", "metadata", "assistant_id", "visible_in_ui")


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    has_more: bool


@dataclass(frozen=True)
class Usage:
    """What one prediction cost, as LM Studio reported it (or counted by the proxy)."""

    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None


class Store:
    def __init__(self, path: str | Path, max_page_bytes: int = 4_194_304) -> None:
        self.path = str(path)
        self.max_page_bytes = max_page_bytes
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self._servers_lock: int | None = None  # see open_for_serving()
        self.migrate()

    def close(self) -> None:
        self.db.close()
        if self._servers_lock is not None:
            os.close(self._servers_lock)  # releases the flock
            self._servers_lock = None

    def checkpoint_in_background(self) -> bool:
        """Stop SQLite's own WAL checkpoints on this connection; the caller runs `checkpoint_wal()`.

        An automatic checkpoint runs inside whichever commit fills the WAL and fsyncs the
        database: one request in about a hundred waited 6-10 ms for it on the event loop.
        Returns False (and changes nothing) if the database has no WAL, as `:memory:` has not.
        """
        if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            return False
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        return True

    def checkpoint_wal(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits for, or blocks, the request path).

        Its own connection, so it may run in a worker thread; sqlite3 releases the GIL meanwhile.
        """
        with contextlib.closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @property
    def total_changes(self) -> int:
        return self.db.total_changes

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded; return their names."""
        self.db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {r[0] for r in self.db.execute("SELECT name FROM migrations")}
        applied = []
        for name, fn in migrations.MIGRATIONS:
            if name in done:
                continue
            with self.transaction() as db:
                fn(db)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (name, now_iso()))
            applied.append(name)
        return applied

    def open_for_serving(self) -> bool:
        """Register this process as a server of the database; True if no other one is running.

        Each serving process holds a shared `flock` on `<database>-servers.lock` for its
        lifetime (the OS drops it when the process dies, however it dies). Trying for an
        exclusive lock first tells whether another live proxy uses the file, whose running
        responses must not be taken for a crash's leftovers. Without `fcntl` (Windows) and
        for `:memory:`, the answer is always True.
        """
        if fcntl is None or self.path == ":memory:" or self._servers_lock is not None:
            return True
        fd = os.open(self.path + "-servers.lock", os.O_RDWR | os.O_CREAT, 0o600)
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

    def create_thread(self, owner: str, **fields: Any) -> dict[str, Any]:
        thread = self.get_thread(self.insert_thread(owner, **fields))
        assert thread is not None
        return thread

    def insert_thread(self, owner: str, **fields: Any) -> str:
        ts = now_iso()
        tid = new_id("thrd")
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

    def get_thread(self, thread_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT t.*, (SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id) AS message_count"
            " FROM threads t WHERE t.id = ?",
            (thread_id,),
        ).fetchone()
        return _thread(row) if row else None

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

    def delete_thread(self, thread_id: str) -> None:
        self.db.execute("DELETE FROM threads WHERE id = ?", (thread_id,))

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
        extra = (
            ", (SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id) AS message_count"
            if table == "threads"
            else ""
        )
        cursor = self.db.execute(
            f"SELECT t.*{extra} FROM {table} t WHERE {' AND '.join(where)} ORDER BY t.seq {sort} LIMIT ?",
            [*args, limit + 1],
        )
        # Rows are read one by one, and the page ends early once it holds `max_bytes` of text
        # (at least one row): a page of huge messages must not take the memory and the event
        # loop of everyone else. `has_more` then tells the client to ask for the rest.
        rows: list[sqlite3.Row] = []
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

    def add_message(
        self,
        thread_id: str,
        role: str,
        content: str,
        metadata: dict[str, Any] | None = None,
        response_id: str | None = None,
    ) -> str:
        mid = new_id("msg")
        ts = now_iso()
        self.db.execute(
            "INSERT INTO messages (id, thread_id, role, content, metadata, response_id, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                mid,
                thread_id,
                role,
                content,
                json.dumps(metadata or {}),
                response_id,
                ts,
            ),
        )
        self.db.execute("UPDATE threads SET last_message_at = ?, updated_at = ? WHERE id = ?", (ts, ts, thread_id))
        return mid

    def get_message(self, thread_id: str, message_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM messages WHERE id = ? AND thread_id = ?", (message_id, thread_id)
        ).fetchone()
        return _message(row) if row else None

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

    def delete_message(self, message_id: str) -> None:
        self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def list_messages(self, thread_id: str, *, limit: int, order: str, after: str | None, before: str | None) -> Page:
        page = self._page("messages", ["t.thread_id = ?"], [thread_id], limit, order, after, before)
        return Page([_message(r) for r in page.rows], page.has_more)

    def history(self, thread_id: str) -> list[tuple[str, str]]:
        """(role, content) of every message of the thread, oldest first."""
        return [
            (r[0], r[1])
            for r in self.db.execute(
                "SELECT role, content FROM messages WHERE thread_id = ? ORDER BY seq", (thread_id,)
            )
        ]

    def _merge_metadata(self, message_id: str, changes: dict[str, Any]) -> None:
        row = self.db.execute("SELECT metadata FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is not None:
            meta = {**json.loads(row[0]), **changes}
            self.db.execute("UPDATE messages SET metadata = ? WHERE id = ?", (json.dumps(meta), message_id))

    # -- responses (one per prediction) --------------------------------------------------

    def begin_response(
        self,
        owner: str,
        thread_id: str,
        model: str,
        inputs: list[tuple[str, str]],
        thread_fields: dict[str, Any] | None,
    ) -> tuple[str, str, list[str], bool]:
        """Accept a request in one transaction: thread (created if `thread_id` is empty),
        the input messages, and an `in_progress` response row.

        Returns (thread_id, response_id, message ids, whether the thread was created).
        """
        rid = new_id("resp")
        with self.transaction():
            created = not thread_id
            if created:
                thread_id = self.insert_thread(owner, **(thread_fields or {}))
            ids = [self.add_message(thread_id, role, text, response_id=rid) for role, text in inputs]
            self.db.execute("UPDATE threads SET last_model_used = ? WHERE id = ?", (model, thread_id))
            self.db.execute(
                "INSERT INTO responses (id, thread_id, owner, model, status, user_message_id, created_at)"
                " VALUES (?, ?, ?, ?, 'in_progress', ?, ?)",
                (rid, thread_id, owner, model, ids[-1] if ids else None, now_iso()),
            )
        return thread_id, rid, ids, created

    def checkpoint(self, response_id: str, thread_id: str, text: str) -> None:
        """Save the partial text of a running prediction (an in-progress assistant message)."""
        row = self.db.execute("SELECT assistant_message_id FROM responses WHERE id = ?", (response_id,)).fetchone()
        with self.transaction() as db:
            if row is not None and row[0]:
                db.execute("UPDATE messages SET content = ? WHERE id = ?", (text, row[0]))
            else:
                mid = self.add_message(thread_id, "assistant", text, {"in_progress": True}, response_id=response_id)
                db.execute("UPDATE responses SET assistant_message_id = ? WHERE id = ?", (mid, response_id))

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
        assistant message is written with `text` and `metadata`.
        """
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
                "UPDATE responses SET status = ?, stop_reason = ?, cancel_mode = ?, input_tokens = ?,"
                " output_tokens = ?, total_tokens = ?, time_to_first_token = ?, tokens_per_second = ?,"
                " duration_seconds = ?, assistant_message_id = ?, error = ?, finished_at = ? WHERE id = ?",
                (
                    status,
                    usage.stop_reason,
                    cancel_mode,
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.input_tokens + usage.output_tokens,
                    usage.time_to_first_token,
                    usage.tokens_per_second,
                    duration,
                    mid,
                    error,
                    now_iso(),
                    response_id,
                ),
            )
        return mid

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
        if delete_thread_if_empty:
            self.db.execute(
                "DELETE FROM threads WHERE id = ? AND NOT EXISTS (SELECT 1 FROM messages WHERE thread_id = ?)",
                (thread_id, thread_id),
            )

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

    # -- assistants, model usage (v5's assistants group, /v1/models) -----------------------

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

    def delete_assistant(self, assistant_id: str) -> None:
        self.db.execute("DELETE FROM assistants WHERE id = ?", (assistant_id,))

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
            where.append("(name LIKE ? ESCAPE '\\' OR IFNULL(description, '') LIKE ? ESCAPE '\\')")
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

    def last_used_models(self, owner: str) -> dict[str, str]:
        """model → when the owner's last response with it was created (ISO-8601)."""
        rows = self.db.execute(
            "SELECT model, MAX(created_at) FROM responses WHERE owner = ? AND model IS NOT NULL GROUP BY model",
            (owner,),
        )
        return {r[0]: r[1] for r in rows}


def _thread(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
    d = dict(row)
    d["metadata"] = json.loads(d["metadata"] or "{}")
    d["visible_in_ui"] = bool(d["visible_in_ui"])
    d["is_pinned"] = bool(d["is_pinned"])
    return d


def _message(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
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


def _assistant(row: sqlite3.Row | dict[str, Any]) -> dict[str, Any]:
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
