"""The guarded uvicorn protocol: no more memory per connection than uvicorn's, and a head that waits for its body."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy import serving


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError("no request is made")


async def test_a_guarded_connection_does_not_grow_uvicorns_instance_dict() -> None:
    config = Config(app=_app)
    config.load()
    limits = serving.ConnectionLimits(1.0, 1.0, 10, lambda: b"")
    protocol: Any = serving.guarded_protocol(limits)
    guarded = protocol(config=config, server_state=ServerState(), app_state={})
    plain = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
    # Three more attributes in the dict made it resize (about 1.3 KB more per connection).
    assert sys.getsizeof(vars(guarded)) <= sys.getsizeof(vars(plain))
    assert guarded._in_body is False and guarded._timer is None


class _Transport:
    """A transport that records each write: one entry per syscall the real one would make."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def writelines(self, chunks: tuple[bytes, ...]) -> None:  # one writev
        self.write(b"".join(chunks))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


async def test_a_response_head_leaves_in_one_write_with_the_body_that_follows_it() -> None:
    transport = _Transport()
    wrapped = serving._HeadersWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    wrapped.write(HEAD)
    wrapped.write(b"{}")
    assert transport.writes == [HEAD + b"{}"]
    await asyncio.sleep(0)  # the flush that was due finds nothing held
    assert transport.writes == [HEAD + b"{}"]
    wrapped.write(b"more")  # the body goes as it comes
    assert transport.writes == [HEAD + b"{}", b"more"]
    assert wrapped.get_write_buffer_size() == 0  # everything else is the transport's


async def test_a_head_with_no_body_yet_leaves_at_the_end_of_the_loops_turn() -> None:
    transport = _Transport()
    wrapped = serving._HeadersWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    wrapped.write(HEAD)  # an SSE stream whose first event is not there yet
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [HEAD]


async def test_closing_writes_the_held_head_first_and_a_lost_connection_drops_it() -> None:
    transport = _Transport()
    wrapped = serving._HeadersWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    wrapped.write(HEAD)
    wrapped.close()
    assert transport.writes == [HEAD] and transport.closed
    await asyncio.sleep(0)
    assert transport.writes == [HEAD]

    transport = _Transport()
    wrapped = serving._HeadersWithBody(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
    wrapped.write(HEAD)
    wrapped.drop()
    await asyncio.sleep(0)
    assert transport.writes == []
