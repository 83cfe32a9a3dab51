"""A slow reader costs bounded memory: deltas coalesce while LM Studio is still drained at full speed."""

from __future__ import annotations

import socket
from typing import Any

import httpx
from support import Harness, assert_consistent, assert_well_terminated, deltas, read_events


def test_slow_reader_does_not_hold_lmstudio_back(make_harness: Any) -> None:
    # Small socket buffers on both ends, so a client that reads nothing blocks the proxy's writes soon.
    small = [(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)]
    h: Harness = make_harness(tokens_per_second=0.0, socket_options=small)
    body = {"inputs": [{"role": "user", "content": "a lot [tokens=20000]"}], "stream": True}
    transport = httpx.HTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)])
    with h.client(transport=transport) as client, client.stream("POST", "/v1/model/response", json=body) as response:
        (stream,) = h.server.run_in_loop(_streams(h))  # registered before the response started
        # Read nothing: the socket buffers fill and the proxy's writes block.
        records = h.sim.wait_for(lambda rs: bool(rs) and rs[-1]["status"] == "completed", timeout=60)
        assert records[-1]["tokens_generated"] == 20000  # LM Studio finished while the client read nothing
        h.server.run_in_loop(stream.finished.wait())
        # Nothing per token waits for the client: at most the (coalesced) events of one batch.
        assert len(stream.outbox._items) <= 3
        events = list(read_events(response))
    # While the client was behind, waiting deltas were merged: far fewer frames than tokens.
    print(f"slow reader: {len(events)} frames for 20000 tokens")
    assert len(events) < 20000 // 10, len(events)
    done = assert_well_terminated(events)
    assert done["event"] == "response.completed" and deltas(events) == done["response"]
    assert done["usage"]["output_tokens"] == 20000
    assert_consistent(h)


async def _streams(h: Harness) -> list[Any]:
    return list(h.server.proxy.registry.streams.values())
