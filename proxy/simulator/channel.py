"""The base of channel handlers (getOrLoad, predict): their connection and envelope helpers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol

from proxy.simulator import protocol
from proxy.simulator.state import SimState


class ConnectionGone(Exception):
    """The websocket closed: nobody is left to talk to."""


class Connection(Protocol):
    """What a channel may do with its websocket."""

    async def send(self, message: dict[str, Any]) -> None:
        """Send one server message; raise ConnectionGone if the socket is closed."""

    async def drop(self) -> None:
        """Close the websocket abruptly (fault injection)."""


class Channel(ABC):
    """One open channel; `run` is its task, `receive` gets the client's channelSend messages."""

    def __init__(self, conn: Connection, channel_id: int, state: SimState) -> None:
        self.conn = conn
        self.channel_id = channel_id
        self.state = state

    @abstractmethod
    async def run(self) -> None:
        """Drive the channel to its end (channelClose or channelError)."""

    def receive(self, message: Any) -> None:  # noqa: B027 - optional hook, ignoring is the default
        """Handle a client message on this channel (by default: ignored)."""

    async def send(self, message: dict[str, Any]) -> None:
        await self.conn.send(protocol.channel_send(self.channel_id, message))

    async def close(self) -> None:
        await self.conn.send(protocol.channel_close(self.channel_id))

    async def fail(self, error: dict[str, Any]) -> None:
        await self.conn.send(protocol.channel_error(self.channel_id, error))
