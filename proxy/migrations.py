"""The schema, as named migrations applied in order and recorded in the `migrations` table.

The same migrations build the SQLite and the PostgreSQL schema: DDL is written in SQLite's
types, which `Dialect.ddl` maps (64-bit integers, double precision, identity columns).

Never edit a migration that has shipped: append a new function decorated with `@migration`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.engines import Connection, Dialect


@dataclass(frozen=True)
class Schema:
    """What a migration is given: the store's connection, inside the migrations' transaction, and its dialect.

    Write DDL in SQLite's terms: `script` gives it to PostgreSQL with its own types (`Dialect.ddl`).
    """

    db: Connection
    dialect: Dialect

    def execute(self, sql: str, parameters: Any = ()) -> Any:
        return self.db.execute(sql, parameters)


Migration = Callable[[Schema], None]
MIGRATIONS: list[tuple[str, Migration]] = []


def migration(fn: Migration) -> Migration:
    """Append `fn` to the migrations, under its name."""
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def _script(db: Schema, sql: str) -> None:
    """Run several statements inside the caller's transaction (`executescript` would commit it)."""
    for statement in sql.split(";"):
        if statement.strip():
            db.execute(db.dialect.ddl(statement))


@migration
def m001_initial(db: Schema) -> None:
    _script(
        db,
        """
        CREATE TABLE threads (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            organization_id TEXT,
            title TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            assistant_id TEXT,
            visible_in_ui INTEGER NOT NULL DEFAULT 1,
            last_model_used TEXT,
            is_pinned INTEGER NOT NULL DEFAULT 0,
            pinned_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            last_message_at TEXT
        );
        CREATE INDEX threads_owner ON threads(owner, seq);
        CREATE TABLE messages (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            response_blocks TEXT,
            response_id TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT
        );
        CREATE INDEX messages_thread ON messages(thread_id, seq);
        CREATE TABLE responses (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            thread_id TEXT NOT NULL,
            owner TEXT NOT NULL,
            model TEXT,
            status TEXT NOT NULL,
            stop_reason TEXT,
            cancel_mode TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            total_tokens INTEGER NOT NULL DEFAULT 0,
            time_to_first_token REAL,
            tokens_per_second REAL,
            duration_seconds REAL,
            user_message_id TEXT,
            assistant_message_id TEXT,
            error TEXT,
            created_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE INDEX responses_owner ON responses(owner, seq);
        CREATE INDEX responses_status ON responses(status);
        """,
    )


@migration
def m002_soft_deleted_messages(db: Schema) -> None:
    """Edit, branch and reset soft-delete messages; a quick_edit of that request restores them."""
    _script(
        db,
        """
        ALTER TABLE messages ADD COLUMN deleted_at TEXT;
        ALTER TABLE messages ADD COLUMN deleted_by TEXT;
        CREATE INDEX messages_deleted_by ON messages(deleted_by) WHERE deleted_by IS NOT NULL
        """,
    )


@migration
def m003_files(db: Schema) -> None:
    """Uploaded files (their bytes are on disk, named by id) and the key that signs their URLs."""
    _script(
        db,
        """
        CREATE TABLE files (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            organization_id TEXT NOT NULL,
            filename TEXT NOT NULL,
            mime_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT,
            status TEXT NOT NULL,
            expires_at INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX files_owner ON files(owner, seq);
        CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)
        """,
    )
    db.execute("INSERT INTO settings VALUES ('files.signing_key', ?)", (secrets.token_hex(32),))


@migration
def m004_assistants(db: Schema) -> None:
    """Assistants (v5's `assistants`), per owner; `settings` holds the generation fields as JSON."""
    _script(
        db,
        """
        CREATE TABLE assistants (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            owner TEXT NOT NULL,
            organization_id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT,
            instructions TEXT,
            model TEXT,
            temperature REAL,
            settings TEXT NOT NULL DEFAULT '{}',
            tool_configurations TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            is_default INTEGER NOT NULL DEFAULT 0,
            is_active INTEGER NOT NULL DEFAULT 1,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        );
        CREATE INDEX assistants_owner ON assistants(owner, seq)
        """,
    )


@migration
def m005_replicas(db: Schema) -> None:
    """Several proxies on one PostgreSQL database (`proxy/replicas.py`): who runs each response, its
    stop request and cancel answer (the cancel endpoint's body, for repeated cancels), and leases.

    The columns exist on SQLite too (one process: unused there). On PostgreSQL a partial unique
    index allows one running response per thread across replicas (the 409); rows that a crash
    left running on one thread (before leases) are marked interrupted first, all but the newest.
    """
    _script(
        db,
        """
        ALTER TABLE responses ADD COLUMN replica_id TEXT;
        ALTER TABLE responses ADD COLUMN accepted_epoch REAL;
        ALTER TABLE responses ADD COLUMN thread_created INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE responses ADD COLUMN tools_ran INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE responses ADD COLUMN stop_request TEXT;
        ALTER TABLE responses ADD COLUMN stop_epoch REAL;
        ALTER TABLE responses ADD COLUMN stop_elapsed REAL;
        ALTER TABLE responses ADD COLUMN cancel_body TEXT;
        ALTER TABLE responses ADD COLUMN ending INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE replicas (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at REAL NOT NULL,
            lease_until REAL NOT NULL
        )
        """,
    )
    if db.dialect.name == "postgresql":
        db.execute(
            "UPDATE responses SET status = 'interrupted' WHERE status = 'in_progress' AND seq < "
            "(SELECT MAX(seq) FROM responses r WHERE r.thread_id = responses.thread_id AND r.status = 'in_progress')"
        )
        db.execute("CREATE UNIQUE INDEX responses_one_running ON responses(thread_id) WHERE status = 'in_progress'")
        db.execute("CREATE INDEX responses_running_by_replica ON responses(replica_id) WHERE status = 'in_progress'")
