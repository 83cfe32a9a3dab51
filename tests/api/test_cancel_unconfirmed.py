"""A cancel LM Studio does not confirm is answered at once, not after the 5 s drain.

Under saturation LM Studio's confirmation queues behind every other stream's fragments on the one
websocket (the bench's saturation phase); a simulator that ignores the cancel is the same thing
seen from the proxy: no final result arrives. When the cancel waited for the drain, every such
cancel waited 5 s.
"""

from __future__ import annotations

from typing import Any

from support import StreamReader, assert_well_terminated, events_named

LONG = "Tell me a long story [tokens=400]"


def test_unconfirmed_cancel_is_answered_with_the_default_config(make_harness: Any) -> None:
    h = make_harness(None, tokens_per_second=40.0)
    h.sim.set_faults(None, ignore_cancel=True)
    reader = StreamReader(h, {"inputs": [{"role": "user", "content": LONG}]})
    reader.wait_deltas(3)
    with h.client() as client:
        # Not a timing assertion: the client's timeout only tells "answered" from "waited out 5 s".
        response = client.post(f"/v1/model/response/{reader.thread_id}/cancel", timeout=3.0)
    assert response.status_code == 200 and response.json()["cancel_mode"] == "quick_edit"
    events = reader.join()
    assert assert_well_terminated(events)["event"] == "response.cancelled"
    assert len(events_named(events, "response.content_delta")) >= 3
    # The proxy answers once the cancel is written to its socket; the simulator may not have read it yet.
    record = h.sim.wait_for(lambda records: records[-1]["cancel_received_at"] is not None)[-1]
    assert record["status"] == "running"  # never confirmed
