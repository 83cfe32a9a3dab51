"""The store's queries for replicas on PostgreSQL: the 409 by unique index, cancels decided once by the
database's clock, the owner's claim on the outcome, late cancels after a disconnect, leases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.errors import StreamAlreadyActive
from proxy.store import Store, Usage

OWNER = "owner-a"
USAGE = Usage(input_tokens=1, output_tokens=2)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Store]:
    store = Store(postgres_url)
    yield store
    store.close()


class Decider:
    """A cancel policy that records what it was asked: quick_edit under `quick` seconds."""

    def __init__(self, quick: float = 5.0) -> None:
        self.quick = quick
        self.calls: list[tuple[float, bool]] = []

    def __call__(self, elapsed: float, tools_ran: bool) -> tuple[str, dict[str, Any]]:
        self.calls.append((elapsed, tools_ran))
        mode = "quick_edit" if elapsed < self.quick and not tools_ran else "keep_partial"
        return mode, {"success": True, "cancel_mode": mode, "elapsed_seconds": round(elapsed, 3)}


def _begin(store: Store, thread_id: str = "") -> tuple[str, str]:
    tid, rid, _, _ = store.begin_response(OWNER, thread_id, "m", [("user", "q")], None)
    return tid, rid


def _status(store: Store, rid: str) -> str:
    row = store.get_response(rid)
    assert row is not None
    return str(row["status"])


def test_one_running_response_per_thread_is_the_databases_rule(pg: Store, tmp_path: Path) -> None:
    tid, rid = _begin(pg)
    with pytest.raises(StreamAlreadyActive) as caught:
        _begin(pg, tid)
    assert caught.value.status == 409 and caught.value.details == {"thread_id": tid}
    assert [r for r, _, _ in pg.history(tid)] == ["user"]  # the refused request stored nothing
    pg.finish_response(rid, status="completed", usage=USAGE, duration=0.1, text="a")
    _begin(pg, tid)
    # SQLite is one process, as before: the store does not refuse (the registry's 409 does).
    lite = Store(tmp_path / "one.sqlite3")
    try:
        tid, _ = _begin(lite)
        _begin(lite, tid)
    finally:
        lite.close()


def test_a_cancel_is_decided_once_and_every_cancel_gets_its_body(pg: Store) -> None:
    pg.register_replica("rep_a", 60, "host", 1)
    tid, rid = _begin(pg)
    assert _begin(pg)[1] != rid
    assert pg.decide_cancel("thrd_unknown", OWNER, Decider(), 600).kind == "missing"
    assert pg.decide_cancel(tid, "someone-else", Decider(), 600).kind == "forbidden"
    decide = Decider()
    first = pg.decide_cancel(tid, OWNER, decide, 600)
    assert (first.kind, first.response_id, first.replica_id, first.decided) == ("wait", rid, "rep_a", True)
    assert first.body is not None and first.body["cancel_mode"] == "quick_edit"
    assert len(decide.calls) == 1 and 0 <= decide.calls[0][0] < 5  # seconds since acceptance, the database's clock
    again = pg.decide_cancel(tid, OWNER, decide, 600)
    assert (again.kind, again.body) == ("wait", first.body) and len(decide.calls) == 1
    assert pg.stop_requests("rep_a") == [(rid, first.body)]  # what the owner polls for
    assert pg.stop_requests("rep_b") == []
    claimed = pg.claim_outcome(rid, None, 0.0)
    assert claimed is not None and claimed["stop_request"] == "cancel"
    assert json.loads(claimed["cancel_body"]) == first.body
    assert pg.stop_requests("rep_a") == []  # claimed: the owner has it
    pg.finish_response(rid, status="cancelled", usage=USAGE, duration=0.1, text=None, cancel_mode="quick_edit")
    done = pg.decide_cancel(tid, OWNER, decide, 600)
    assert (done.kind, done.body) == ("answered", first.body) and len(decide.calls) == 1
    assert pg.decide_cancel(tid, OWNER, decide, 0).kind == "missing"  # remembered for a while, not forever


def test_after_the_owners_claim_a_cancel_waits_for_the_outcome(pg: Store) -> None:
    tid, rid = _begin(pg)
    assert pg.claim_outcome(rid, None, 0.0) == {"stop_request": None, "cancel_body": None, "stop_elapsed": None}
    decide = Decider()
    waiting = pg.decide_cancel(tid, OWNER, decide, 600)
    assert (waiting.kind, waiting.decided, waiting.body) == ("wait", False, None) and decide.calls == []
    pg.finish_response(rid, status="completed", usage=USAGE, duration=0.1, text="all of it")
    assert pg.decide_cancel(tid, OWNER, decide, 600).kind == "missing"  # completed: later cancels get 404


def test_a_cancel_after_a_disconnect_gets_the_mode_of_the_disconnects_moment(pg: Store) -> None:
    tid, rid = _begin(pg)
    pg.checkpoint(rid, tid, "part")
    pg.note_stop(rid, "disconnect", 0.5)
    pg.note_stop(rid, "shutdown", 9.0)  # the first stop wins
    claimed = pg.claim_outcome(rid, "disconnect", 0.7)
    assert claimed is not None and (claimed["stop_request"], claimed["stop_elapsed"]) == ("disconnect", 0.5)
    pg.finish_response(rid, status="cancelled", usage=USAGE, duration=1, text="part", cancel_mode="disconnect")
    decide = Decider(quick=1.0)
    late = pg.decide_cancel(tid, OWNER, decide, 600)
    assert late.kind == "answered" and late.late_mode == "quick_edit" and decide.calls == [(0.5, False)]
    assert pg.history(tid) == []  # quick_edit: the turn is gone
    repeated = pg.decide_cancel(tid, OWNER, decide, 600)
    assert (repeated.kind, repeated.body, repeated.late_mode) == ("answered", late.body, None)


def test_a_disconnect_then_a_cancel_before_the_end_uses_the_disconnects_moment(pg: Store) -> None:
    tid, rid = _begin(pg)
    pg.note_stop(rid, "disconnect", 0.25)
    decide = Decider(quick=1.0)
    ticket = pg.decide_cancel(tid, OWNER, decide, 600)
    assert ticket.kind == "wait" and ticket.decided and decide.calls == [(0.25, False)]
    pg.note_tools_ran(rid)
    tid2, rid2 = _begin(pg)
    pg.note_tools_ran(rid2)
    assert pg.decide_cancel(tid2, OWNER, decide, 600).body == {
        "success": True, "cancel_mode": "keep_partial", "elapsed_seconds": round(decide.calls[-1][0], 3)
    }  # fmt: skip
    assert decide.calls[-1][1] is True  # a tool the proxy ran: never a quick_edit


def test_leases_and_the_recovery_of_a_dead_replicas_responses(pg: Store, postgres_url: str) -> None:
    other = Store(postgres_url)
    try:
        other.register_replica("rep_live", 60, "host", 2)
        _, live_rid = _begin(other)
        pg.register_replica("rep_dead", -1, "host", 1)  # a lease that has run out already
        left_tid, left_rid = _begin(pg)
        asked_tid, asked_rid = _begin(pg)
        quick_tid, quick_rid = _begin(pg)
        for tid, rid in ((left_tid, left_rid), (asked_tid, asked_rid), (quick_tid, quick_rid)):
            pg.checkpoint(rid, tid, f"partial of {rid}")
        assert pg.decide_cancel(asked_tid, OWNER, Decider(quick=0), 600).decided
        assert pg.decide_cancel(quick_tid, OWNER, Decider(quick=60), 600).decided
        assert pg.response_state(left_rid) == ("in_progress", False)
        assert other.response_state(live_rid) == ("in_progress", True)

        assert sorted(other.recover_dead_replicas()) == sorted([left_rid, asked_rid, quick_rid])
        assert other.recover_dead_replicas() == []
        assert _status(pg, left_rid) == "interrupted" and _status(pg, asked_rid) == "cancelled"
        assert _status(pg, live_rid) == "in_progress"  # a live lease: left alone
        (_, left_text, left_meta), *_ = [m for m in pg.history(left_tid) if m[0] == "assistant"]
        assert left_text == f"partial of {left_rid}" and left_meta == {"in_progress": False, "interrupted": True}
        (_, asked_text, asked_meta), *_ = [m for m in pg.history(asked_tid) if m[0] == "assistant"]
        assert asked_text == f"partial of {asked_rid}"
        assert asked_meta["cancel_mode"] == "keep_partial" and asked_meta["interrupted"] is True
        assert pg.get_thread(quick_tid) is None  # quick_edit of the request that made the thread
        answered = other.decide_cancel(asked_tid, OWNER, Decider(), 600)
        assert answered.kind == "answered" and answered.body is not None
        assert answered.body["cancel_mode"] == "keep_partial"

        assert pg.renew_lease("rep_dead", 60) is False  # it had run out: said once, then renewed
        assert pg.renew_lease("rep_dead", 60) is True
        pg.retire_replica("rep_dead")
        assert pg.renew_lease("rep_dead", 60) is False  # gone: taken again
    finally:
        other.close()
