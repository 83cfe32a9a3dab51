"""The machine's floor under the TTFT overhead: a do-nothing HTTP server in a process of its own.

A proxy puts two loopback hops into every request that a direct client does not make: the
request reaching the proxy and the answer reaching the client. Where processes sleep while
they wait (a virtual machine's idle cores most of all), each hop also pays a wake-up. This
server answers every request at once and does nothing else; the bench times a request to it
after the same idle wait as a TTFT sample, so the report shows how much of the overhead no
proxy on this machine could remove. Run as `python -m proxy.bench.floor PORT`.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class _Answer(asyncio.Protocol):
    """One answer per request head received (GETs without a body: a head ends with a blank line)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        self.pending += data
        heads = self.pending.count(b"\r\n\r\n")
        if heads:
            self.pending = self.pending.rsplit(b"\r\n\r\n", 1)[1]
            self.transport.write(ANSWER * heads)


async def _serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Answer, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    try:  # the event loop the proxy runs on (uvicorn picks uvloop where it is installed)
        import uvloop
    except ImportError:
        asyncio.run(_serve(int(argv[0])))
    else:
        uvloop.run(_serve(int(argv[0])))


if __name__ == "__main__":
    main(sys.argv[1:])
