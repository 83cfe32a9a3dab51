"""The store on a temp-file SQLite: migrations, threads, cursors, and the life of a response."""

from __future__ import annotations

import concurrent.futures
import contextlib
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from proxy import app as app_module
from proxy import migrations
from proxy import store as store_module
from proxy.errors import StorageUnavailable
from proxy.store import Page, Store, Usage

OWNER = "owner-a"
OTHER = "owner-b"
USAGE = Usage(input_tokens=7, output_tokens=3, stop_reason="eosFound", time_to_first_token=0.05, tokens_per_second=40)


def ids(page: Page) -> list[str]:
    return [r["id"] for r in page.rows]


def usage_row(store: Store, response_id: str) -> dict[str, object]:
    (row,) = [r for r in store.list_usage(OWNER, None, 1000).rows if r["id"] == response_id]
    return row


# -- migrations ----------------------------------------------------------------------------


def test_migrations_are_recorded_once_and_reopening_applies_nothing(database: str) -> None:
    names = [name for name, _ in migrations.MIGRATIONS]
    assert names, "no migrations"
    first = Store(database)
    assert first.migrate() == []  # the constructor applied them
    first.close()
    again = Store(database)
    try:
        assert again.migrate() == []
        recorded = [r[0] for r in again.db.execute("SELECT name FROM migrations ORDER BY applied_at, name")]
        for table in ("threads", "messages", "responses", "files", "assistants", "settings"):
            assert again.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] == (table == "settings")
    finally:
        again.close()
    assert recorded == names


def _duplicate_table() -> tuple[type[Exception], ...]:
    """PostgreSQL's error for a table that exists (psycopg is only needed for the PostgreSQL runs)."""
    try:
        from psycopg.errors import DuplicateTable
    except ImportError:
        return ()
    return (DuplicateTable,)


def test_migrate_runs_what_is_not_recorded(database: str) -> None:
    store = Store(database)
    try:
        store.db.execute("DELETE FROM migrations WHERE name = ?", (migrations.MIGRATIONS[0][0],))
        # A recorded migration is what stops it running twice: unrecorded, it runs and fails (table exists).
        with pytest.raises((sqlite3.OperationalError, *_duplicate_table()), match="already exists"):
            store.migrate()
        # Nothing of the failed run stays: the migrations run in one transaction.
        recorded = [r[0] for r in store.db.execute("SELECT name FROM migrations ORDER BY applied_at, name")]
        assert recorded == [name for name, _ in migrations.MIGRATIONS[1:]]
    finally:
        store.close()


def test_stores_opened_at_once_migrate_once(database: str) -> None:
    """Replicas starting together: one applies the migrations, the others find them recorded."""
    start = threading.Barrier(3)

    def open_store() -> list[str]:
        start.wait(timeout=10)
        store = Store(database)
        try:
            return store.migrate()
        finally:
            store.close()

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: open_store(), range(3)))
    assert results == [[], [], []]  # each constructor applied or found them; nothing failed
    store = Store(database)
    try:
        names = [r[0] for r in store.db.execute("SELECT name FROM migrations")]
    finally:
        store.close()
    assert sorted(names) == sorted(name for name, _ in migrations.MIGRATIONS)


def test_numbers_keep_their_range_and_precision(store: Store) -> None:
    """64-bit integers and doubles on both engines (PostgreSQL's INTEGER and REAL would be 32-bit)."""
    usage = Usage(input_tokens=2**40, output_tokens=1, time_to_first_token=0.1234567890123, tokens_per_second=1e-9)
    _, rid, _, _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    store.finish_response(rid, status="completed", usage=usage, duration=2**-30, text="a")
    row = usage_row(store, rid)
    assert (row["input_tokens"], row["total_tokens"]) == (2**40, 2**40 + 1)
    assert (row["time_to_first_token"], row["tokens_per_second"], row["duration_seconds"]) == (
        0.1234567890123,
        1e-9,
        2**-30,
    )


# -- threads -------------------------------------------------------------------------------


def test_thread_crud(store: Store) -> None:
    thread = store.create_thread(
        OWNER, title="T", metadata={"k": 1}, assistant_id="asst_1", organization_id="org_1", visible_in_ui=False
    )
    assert thread["id"].startswith("thrd_") and thread["owner"] == OWNER
    assert (thread["title"], thread["metadata"], thread["assistant_id"]) == ("T", {"k": 1}, "asst_1")
    assert thread["organization_id"] == "org_1" and thread["visible_in_ui"] is False
    assert thread["is_pinned"] is False and thread["message_count"] == 0 and thread["last_message_at"] is None

    store.update_thread(thread["id"], title="U", metadata=None, visible_in_ui=True, is_pinned=True, pinned_at="p")
    updated = store.get_thread(thread["id"])
    assert updated is not None
    assert (updated["title"], updated["metadata"], updated["visible_in_ui"]) == ("U", {}, True)
    assert updated["is_pinned"] is True and updated["pinned_at"] == "p"
    assert updated["updated_at"] >= thread["updated_at"] and updated["created_at"] == thread["created_at"]
    with pytest.raises(KeyError):
        store.update_thread(thread["id"], owner=OTHER)  # not a field a caller may change
    assert store.get_thread(thread["id"]) == updated

    mid = store.add_message(thread["id"], "user", "hi")
    counted = store.get_thread(thread["id"])
    assert counted is not None and counted["message_count"] == 1 and counted["last_message_at"] is not None
    store.delete_thread(thread["id"])
    assert store.get_thread(thread["id"]) is None
    assert store.get_message(thread["id"], mid) is None  # messages go with their thread


def test_thread_defaults(store: Store) -> None:
    thread = store.create_thread(OWNER)
    assert thread["title"] is None and thread["metadata"] == {} and thread["visible_in_ui"] is True


def test_messages_update_delete_and_history(store: Store) -> None:
    tid = store.create_thread(OWNER)["id"]
    first = store.add_message(tid, "user", "q", {"a": 1})
    second = store.add_message(tid, "assistant", "answer")
    message = store.get_message(tid, second)
    assert message is not None and message["content"] == "answer" and message["metadata"] == {}
    store.update_message(first, "q2", None)
    edited = store.get_message(tid, first)
    assert edited is not None and edited["content"] == "q2" and edited["metadata"] == {"a": 1}
    assert edited["updated_at"] is not None
    store.update_message(first, None, {"b": 2})
    edited = store.get_message(tid, first)
    assert edited is not None and edited["content"] == "q2" and edited["metadata"] == {"a": 1, "b": 2}  # merged
    assert store.history(tid) == [("user", "q2", {"a": 1, "b": 2}), ("assistant", "answer", {})]
    store.delete_message(first)
    assert store.history(tid) == [("assistant", "answer", {})]
    other = store.create_thread(OWNER)["id"]
    assert store.get_message(other, second) is None  # a message is found only in its own thread


def test_list_threads_is_per_owner_with_filters_and_count(store: Store) -> None:
    a = store.create_thread(OWNER, organization_id="org_1")["id"]
    b = store.create_thread(OWNER, organization_id="org_2", visible_in_ui=False)["id"]
    store.create_thread(OTHER, organization_id="org_1")
    store.update_thread(a, is_pinned=True)

    def listed(**filters: object) -> list[str]:
        return ids(store.list_threads(OWNER, limit=10, order="asc", after=None, before=None, filters=filters))

    assert listed() == [a, b]
    assert listed(organization_id="org_1") == [a]
    assert listed(is_pinned=True) == [a] and listed(is_pinned=False) == [b]
    assert listed(visible_in_ui=False) == [b]
    assert store.count_threads(OWNER, {}) == 2 and store.count_threads(OWNER, {"is_pinned": True}) == 1
    assert store.count_threads(OTHER, {}) == 1


def test_delete_threads_keeps_the_ids_in_keep_and_other_owners(store: Store) -> None:
    keep = store.create_thread(OWNER, organization_id="org_1")["id"]
    gone = store.create_thread(OWNER, organization_id="org_1")["id"]
    other_org = store.create_thread(OWNER, organization_id="org_2")["id"]
    theirs = store.create_thread(OTHER, organization_id="org_1")["id"]
    store.add_message(gone, "user", "x")
    assert store.delete_threads(OWNER, "org_1", keep={keep}) == 1
    assert store.get_thread(gone) is None
    assert all(store.get_thread(t) is not None for t in (keep, other_org, theirs))
    assert store.delete_threads(OWNER, None, keep={keep}) == 1  # every organization
    assert store.get_thread(other_org) is None and store.get_thread(keep) is not None
    assert store.get_thread(theirs) is not None


# -- cursors ---------------------------------------------------------------------------------

N = 5


@pytest.fixture
def five_threads(store: Store) -> list[str]:
    made = [store.create_thread(OWNER, title=str(i))["id"] for i in range(N)]
    store.create_thread(OTHER)  # never on the owner's pages
    return made


def _threads(store: Store, order: str, limit: int, after: str | None = None, before: str | None = None) -> Page:
    return store.list_threads(OWNER, limit=limit, order=order, after=after, before=before, filters={})


@pytest.mark.parametrize(
    ("order", "limit", "after", "before", "expected", "has_more"),
    [
        ("asc", 2, None, None, [0, 1], True),
        ("asc", 2, 1, None, [2, 3], True),
        ("asc", 2, 3, None, [4], False),
        ("asc", 2, None, 4, [2, 3], True),
        ("asc", 2, None, 2, [0, 1], False),
        ("desc", 2, None, None, [4, 3], True),
        ("desc", 2, 3, None, [2, 1], True),
        ("desc", 2, 1, None, [0], False),
        ("desc", 2, None, 0, [2, 1], True),
        ("desc", 2, None, 2, [4, 3], False),
        # A cursor at either end.
        ("asc", 2, 4, None, [], False),
        ("asc", 2, None, 0, [], False),
        ("desc", 2, 0, None, [], False),
        ("desc", 2, None, 4, [], False),
        # A page exactly full is the last one; one short of it is not.
        ("asc", 5, None, None, [0, 1, 2, 3, 4], False),
        ("asc", 4, None, None, [0, 1, 2, 3], True),
        ("asc", 4, 0, None, [1, 2, 3, 4], False),
        ("desc", 4, 4, None, [3, 2, 1, 0], False),
        ("asc", 4, None, 4, [0, 1, 2, 3], False),
        ("desc", 4, None, 0, [4, 3, 2, 1], False),
        # Both cursors: the rows strictly between them, nearest the `before` end first read.
        ("asc", 10, 0, 4, [1, 2, 3], False),
    ],
)
def test_thread_pages(
    store: Store,
    five_threads: list[str],
    order: str,
    limit: int,
    after: int | None,
    before: int | None,
    expected: list[int],
    has_more: bool,
) -> None:
    page = _threads(
        store,
        order,
        limit,
        None if after is None else five_threads[after],
        None if before is None else five_threads[before],
    )
    assert ids(page) == [five_threads[i] for i in expected]
    assert page.has_more is has_more


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 6])
def test_paging_forward_and_backward_visits_every_thread_once(
    store: Store, five_threads: list[str], order: str, limit: int
) -> None:
    in_order = five_threads if order == "asc" else five_threads[::-1]
    seen: list[str] = []
    page = _threads(store, order, limit)
    seen += ids(page)
    while page.has_more:
        page = _threads(store, order, limit, after=seen[-1])
        seen += ids(page)
    assert seen == in_order
    # Backwards from the last row: pages of `before` cursors give the same rows.
    back: list[str] = [in_order[-1]]
    page = _threads(store, order, limit, before=back[0])
    back = ids(page) + back
    while page.has_more:
        page = _threads(store, order, limit, before=back[0])
        back = ids(page) + back
    assert back == in_order


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 2, 3, 4])
def test_message_pages(store: Store, order: str, limit: int) -> None:
    tid = store.create_thread(OWNER)["id"]
    other = store.create_thread(OWNER)["id"]
    made = []
    for i in range(4):
        made.append(store.add_message(tid, "user" if i % 2 == 0 else "assistant", str(i)))
        store.add_message(other, "user", "elsewhere")  # interleaved seqs of another thread never show
    in_order = made if order == "asc" else made[::-1]
    seen: list[str] = []
    page = store.list_messages(tid, limit=limit, order=order, after=None, before=None)
    seen += ids(page)
    assert page.has_more is (limit < 4)
    while page.has_more:
        page = store.list_messages(tid, limit=limit, order=order, after=seen[-1], before=None)
        seen += ids(page)
    assert seen == in_order
    last = store.list_messages(tid, limit=limit, order=order, after=in_order[-1], before=None)
    assert last.rows == [] and last.has_more is False
    first = store.list_messages(tid, limit=limit, order=order, after=None, before=in_order[0])
    assert first.rows == [] and first.has_more is False
    before_last = store.list_messages(tid, limit=limit, order=order, after=None, before=in_order[-1])
    assert ids(before_last) == in_order[-1 - min(limit, 3) : -1] and before_last.has_more is (limit < 3)


# -- responses -------------------------------------------------------------------------------


def test_begin_response_creates_thread_messages_and_an_in_progress_row(store: Store) -> None:
    tid, rid, mids, created = store.begin_response(
        OWNER, "", "model-a", [("user", "hello")], {"organization_id": "org_x", "metadata": {"m": 1}}
    )
    assert created is True and rid.startswith("resp_") and len(mids) == 1
    thread = store.get_thread(tid)
    assert thread is not None and thread["owner"] == OWNER and thread["last_model_used"] == "model-a"
    assert thread["organization_id"] == "org_x" and thread["metadata"] == {"m": 1}
    message = store.get_message(tid, mids[0])
    assert message is not None and message["response_id"] == rid and message["content"] == "hello"
    row = usage_row(store, rid)
    assert row["status"] == "in_progress" and row["user_message_id"] == mids[0] and row["thread_id"] == tid

    store.finish_response(rid, status="completed", usage=USAGE, duration=0.1, text="hi")
    tid2, rid2, mids2, created2 = store.begin_response(OWNER, tid, "model-b", [("user", "again")], None)
    assert (tid2, created2) == (tid, False) and rid2 != rid
    assert [(r, t) for r, t, _ in store.history(tid)] == [("user", "hello"), ("assistant", "hi"), ("user", "again")]
    thread = store.get_thread(tid)
    assert thread is not None and thread["last_model_used"] == "model-b"
    # One UPDATE of the thread per request (model and times together): it is the new message's time.
    latest = store.get_message(tid, mids2[0])
    assert latest is not None and thread["last_message_at"] == thread["updated_at"] == latest["created_at"]


def test_completed_response_after_checkpoints(store: Store) -> None:
    tid, rid, (uid,), _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    store.checkpoint(rid, tid, "par")
    store.checkpoint(rid, tid, "partial")
    messages = store.list_messages(tid, limit=10, order="asc", after=None, before=None).rows
    assert [(m["role"], m["content"]) for m in messages] == [("user", "q"), ("assistant", "partial")]
    assert messages[1]["metadata"] == {"in_progress": True}

    mid = store.finish_response(rid, status="completed", usage=USAGE, duration=1.5, text="final", metadata={})
    assert mid is not None and mid == messages[1]["id"]  # the checkpointed message becomes the answer
    message = store.get_message(tid, mid)
    assert message is not None
    assert (message["content"], message["metadata"]) == ("final", {})
    row = usage_row(store, rid)
    assert row["status"] == "completed" and row["assistant_message_id"] == mid and row["user_message_id"] == uid
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (7, 3, 10)
    assert row["stop_reason"] == "eosFound" and row["duration_seconds"] == 1.5 and row["finished_at"]


def test_completed_response_without_checkpoint_adds_the_answer(store: Store) -> None:
    tid, rid, _, _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    mid = store.finish_response(rid, status="completed", usage=USAGE, duration=0.1, text="a", metadata={"x": 1})
    assert mid is not None
    message = store.get_message(tid, mid)
    assert message is not None and message["role"] == "assistant" and message["metadata"] == {"x": 1}
    assert message["response_id"] == rid


def test_finish_response_of_an_unknown_response(store: Store) -> None:
    assert store.finish_response("resp_nope", status="completed", usage=USAGE, duration=0, text="x") is None


def test_keep_partial_keeps_the_text_and_its_metadata(store: Store) -> None:
    tid, rid, (uid,), _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    store.checkpoint(rid, tid, "part")
    meta = {"cancelled": True, "cancel_mode": "keep_partial"}
    mid = store.finish_response(
        rid, status="cancelled", usage=USAGE, duration=6.0, text="partial", metadata=meta, cancel_mode="keep_partial"
    )
    assert mid is not None
    message = store.get_message(tid, mid)
    assert message is not None and message["content"] == "partial" and message["metadata"] == meta
    assert store.get_message(tid, uid) is not None
    row = usage_row(store, rid)
    assert row["status"] == "cancelled" and row["cancel_mode"] == "keep_partial" and row["output_tokens"] == 3


def test_quick_edit_deletes_the_response_and_the_thread_it_created(store: Store) -> None:
    tid, rid, _, created = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    store.checkpoint(rid, tid, "part")
    mid = store.finish_response(
        rid,
        status="cancelled",
        usage=USAGE,
        duration=0.2,
        text=None,
        cancel_mode="quick_edit",
        delete_thread_if_empty=created,
    )
    assert mid is None
    assert store.get_thread(tid) is None
    row = usage_row(store, rid)  # usage survives its thread
    assert row["cancel_mode"] == "quick_edit" and row["assistant_message_id"] is None and row["output_tokens"] == 3


def test_quick_edit_keeps_a_thread_with_older_messages(store: Store) -> None:
    tid, first, _, _ = store.begin_response(OWNER, "", "m", [("user", "one")], None)
    store.finish_response(first, status="completed", usage=USAGE, duration=0.1, text="answer one")
    _, rid, _, _ = store.begin_response(OWNER, tid, "m", [("user", "two")], None)
    store.checkpoint(rid, tid, "partial two")
    store.finish_response(
        rid,
        status="cancelled",
        usage=USAGE,
        duration=0.1,
        text=None,
        cancel_mode="quick_edit",
        delete_thread_if_empty=True,
    )
    assert store.get_thread(tid) is not None
    assert [(r, t) for r, t, _ in store.history(tid)] == [("user", "one"), ("assistant", "answer one")]


def test_quick_edit_without_delete_thread_if_empty_keeps_the_empty_thread(store: Store) -> None:
    tid, rid, _, _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    store.finish_response(rid, status="cancelled", usage=USAGE, duration=0.1, text=None, cancel_mode="quick_edit")
    thread = store.get_thread(tid)
    assert thread is not None and thread["message_count"] == 0


def _disconnected(store: Store) -> tuple[str, str, str]:
    """A response stopped by a client disconnect: its partial answer kept, no cancel mode yet."""
    tid, rid, _, _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    store.checkpoint(rid, tid, "part")
    meta = {"cancelled": True, "cancel_reason": "client_disconnected"}
    mid = store.finish_response(rid, status="cancelled", usage=USAGE, duration=1, text="partial", metadata=meta)
    assert mid is not None
    return tid, rid, mid


def test_late_cancel_keep_partial_marks_the_kept_answer(store: Store) -> None:
    tid, rid, mid = _disconnected(store)
    store.apply_late_cancel(rid, "keep_partial", delete_thread_if_empty=True)
    message = store.get_message(tid, mid)
    assert message is not None and message["content"] == "partial"
    assert message["metadata"] == {
        "cancelled": True,
        "cancel_reason": "client_disconnected",
        "cancel_mode": "keep_partial",
    }
    row = usage_row(store, rid)
    assert row["cancel_mode"] == "keep_partial" and row["assistant_message_id"] == mid


def test_late_cancel_quick_edit_deletes_what_the_response_made(store: Store) -> None:
    tid, rid, _ = _disconnected(store)
    store.apply_late_cancel(rid, "quick_edit", delete_thread_if_empty=True)
    assert store.get_thread(tid) is None
    row = usage_row(store, rid)
    assert row["cancel_mode"] == "quick_edit" and row["assistant_message_id"] is None and row["status"] == "cancelled"


def test_late_cancel_quick_edit_keeps_a_thread_it_did_not_create(store: Store) -> None:
    tid, rid, _ = _disconnected(store)
    store.apply_late_cancel(rid, "quick_edit", delete_thread_if_empty=False)
    thread = store.get_thread(tid)
    assert thread is not None and thread["message_count"] == 0


def snapshot(store: Store) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, on either engine."""
    tables = ("threads", "messages", "responses", "files", "assistants", "settings", "migrations")
    return {t: [tuple(r) for r in store.db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()] for t in tables}


def test_late_cancel_of_an_unknown_response_changes_nothing(store: Store) -> None:
    store.begin_response(OWNER, "", "m", [("user", "q")], None)
    before = snapshot(store)
    assert before["threads"] and before["messages"] and before["responses"]
    store.apply_late_cancel("resp_nope", "quick_edit", delete_thread_if_empty=True)
    assert snapshot(store) == before


def test_recover_interrupted(store: Store) -> None:
    tid, rid, _, _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    store.checkpoint(rid, tid, "half an answer")
    _, silent, _, _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)  # nothing generated yet
    _, done, _, _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    store.finish_response(done, status="completed", usage=USAGE, duration=0.1, text="a")

    assert store.recover_interrupted() == 2
    assert usage_row(store, rid)["status"] == "interrupted" and usage_row(store, rid)["finished_at"]
    assert usage_row(store, silent)["status"] == "interrupted"
    assert usage_row(store, done)["status"] == "completed"
    (message,) = [
        m
        for m in store.list_messages(tid, limit=10, order="asc", after=None, before=None).rows
        if m["role"] == "assistant"
    ]
    assert message["content"] == "half an answer"
    assert message["metadata"] == {"in_progress": False, "interrupted": True}
    assert store.recover_interrupted() == 0


def test_usage_outlives_deleted_threads_and_pages_newest_first(store: Store) -> None:
    made = []
    for i in range(3):
        tid, rid, _, _ = store.begin_response(OWNER, "", "m", [("user", str(i))], None)
        store.finish_response(rid, status="completed", usage=USAGE, duration=0.1, text="a")
        made.append((tid, rid))
    store.begin_response(OTHER, "", "m", [("user", "theirs")], None)
    assert store.delete_threads(OWNER, None, keep=set()) == 3
    page = store.list_usage(OWNER, None, 2)
    assert ids(page) == [made[2][1], made[1][1]] and page.has_more is True
    assert ids(store.list_usage(OWNER, None, 3)) == [r for _, r in reversed(made)]
    assert store.list_usage(OWNER, None, 3).has_more is False
    assert ids(store.list_usage(OWNER, made[0][0], 10)) == [made[0][1]]


def test_finish_after_the_thread_was_deleted_records_usage_only(store: Store) -> None:
    tid, rid, _, _ = store.begin_response(OWNER, "", "m", [("user", "q")], None)
    store.delete_thread(tid)
    assert store.finish_response(rid, status="completed", usage=USAGE, duration=0.1, text="late") is None
    assert usage_row(store, rid)["status"] == "completed" and store.get_thread(tid) is None


def test_checkpoint_in_background_needs_a_wal(tmp_path: Path) -> None:
    on_file = Store(tmp_path / "wal.sqlite3")
    in_memory = Store(":memory:")
    try:
        assert on_file.checkpoint_in_background() is True
        assert in_memory.checkpoint_in_background() is False
        tid = on_file.create_thread(OWNER)["id"]
        on_file.checkpoint_wal()  # from its own connection: the data stays readable
        assert on_file.get_thread(tid) is not None
    finally:
        on_file.close()
        in_memory.close()


def _wal_frames(path: Path) -> int:
    """How many frames the WAL holds (since it last started over), read from another connection."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        frames: int = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        return frames


def _fill(store: Store, thread_id: str, kilobytes: int) -> None:
    for _ in range(kilobytes // 64):
        store.add_message(thread_id, "user", "x" * 65536)


async def test_the_wal_starts_over_under_commits_that_never_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under constant load a commit always lands while the background checkpoint copies; then the
    # WAL is never wholly copied when the next commit begins, and SQLite appends to it forever.
    # Past WAL_RESTART_BYTES the proxy's own connection copies the rest (no commit lands meanwhile).
    monkeypatch.setattr(app_module, "WAL_RESTART_BYTES", 256 * 1024)
    path = tmp_path / "busy.sqlite3"
    store = Store(path)
    real_connect = sqlite3.connect

    class CommitDuringCheckpoint:
        """The checkpoint's connection; the proxy's own is in a write transaction while it copies."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.db: sqlite3.Connection = real_connect(*args, **kwargs)

        def execute(self, sql: str) -> sqlite3.Cursor:
            if "PASSIVE" not in sql:
                return self.db.execute(sql)
            with store.transaction():
                store.add_message(thread_id, "user", "written while the checkpoint copied")
                return self.db.execute(sql)

        def close(self) -> None:
            self.db.close()

    try:
        assert store.checkpoint_in_background() is True
        thread_id = store.create_thread(OWNER)["id"]
        monkeypatch.setattr(sqlite3, "connect", CommitDuringCheckpoint)
        for _ in range(3):  # a busy second, its checkpoint, and so on
            _fill(store, thread_id, 512)
            await app_module.checkpoint_round(store)
        monkeypatch.setattr(sqlite3, "connect", real_connect)
        store.add_message(thread_id, "user", "the next commit")
        # Started over: the WAL holds the last commit only (a few pages), not three seconds of them.
        assert _wal_frames(path) < 16
        assert len(store.list_messages(thread_id, limit=100, order="asc", after=None, before=None).rows) == 3 * 8 + 4
    finally:
        store.close()


def test_the_wal_file_shrinks_when_it_starts_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without journal_size_limit the -wal file keeps the largest size a burst gave it.
    monkeypatch.setattr(store_module, "WAL_KEEP_BYTES", 128 * 1024)
    path = tmp_path / "burst.sqlite3"
    store = Store(path)
    try:
        assert store.checkpoint_in_background() is True
        thread_id = store.create_thread(OWNER)["id"]
        _fill(store, thread_id, 1024)
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 1024 * 1024
        store.checkpoint_wal()
        store.add_message(thread_id, "user", "after the burst")  # starts the WAL over
        assert wal.stat().st_size <= 128 * 1024
    finally:
        store.close()


def test_a_failed_wal_restart_is_a_storage_fault_the_next_round_retries(tmp_path: Path) -> None:
    # The checkpoint loop survives StorageUnavailable only; any SQLite error must arrive as one.
    store = Store(tmp_path / "locked.sqlite3")
    real = store.db

    class Failing:
        in_transaction = False
        total_changes = 0

        def execute(self, sql: str, *args: Any) -> Any:
            if "wal_checkpoint" in sql:
                raise sqlite3.OperationalError("database table is locked")
            return real.execute(sql, *args)

    try:
        store.db = Failing()  # type: ignore[assignment]
        with pytest.raises(StorageUnavailable, match=r"checkpointing .* failed: database table is locked"):
            store.restart_wal()
    finally:
        store.db = real
        store.close()


def test_now_iso_formats_each_instant_as_datetime_does_across_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    before = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert before <= store_module.now_iso() <= datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The second's text is kept: each new second (and a clock set back) must replace it.
    second = 10**9
    for ns in (1_700_000_000 * second - 1, 1_700_000_000 * second, 1_700_000_000 * second + 123_456_789,
               1_600_000_000 * second + second // 2):  # fmt: skip
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        instant = datetime.fromtimestamp(ns // second, UTC) + timedelta(microseconds=ns % second // 1000)
        assert store_module.now_iso() == instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
