"""One websocket connection: authentication, envelope dispatch, and the channels it owns."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from proxy.simulator import protocol, rpc
from proxy.simulator.channel import Channel, ConnectionGone
from proxy.simulator.loading import LoadChannel
from proxy.simulator.models import ModelType
from proxy.simulator.prediction import PredictionChannel
from proxy.simulator.repository import DownloadChannel
from proxy.simulator.state import SimState

log = logging.getLogger(__name__)

# Close code for a connection refused by the `refuse_connections` fault (1013: try again later).
REFUSED = 1013
DROPPED = 1011


class Session:
    """Serves one namespace websocket until the client (or a fault) closes it."""

    def __init__(self, websocket: WebSocket, namespace: str, state: SimState) -> None:
        self._ws = websocket
        self._namespace = namespace
        self._state = state
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._channels: dict[int, Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, message: dict[str, Any]) -> None:
        text = protocol.encode(message)
        async with self._send_lock:
            if self._closed:
                raise ConnectionGone
            try:
                await self._ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError) as exc:
                self._closed = True
                raise ConnectionGone from exc

    async def drop(self) -> None:
        self._closed = True
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await self._ws.close(code=DROPPED, reason="simulated connection drop")

    async def serve(self) -> None:
        if self._state.refusing():
            await self._ws.close(code=REFUSED)  # before accept: the handshake gets HTTP 403
            return
        await self._ws.accept()
        try:
            if await self._authenticate():
                await self._receive_loop()
        except WebSocketDisconnect:
            pass
        finally:
            self._closed = True
            # Channel tasks only ever talk to this socket: with it gone they stop (see prediction.py).
            for task in self._tasks:
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if WebSocketState.DISCONNECTED not in (self._ws.application_state, self._ws.client_state):
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await self._ws.close()

    async def _authenticate(self) -> bool:
        try:
            message = json.loads(await self._ws.receive_text())
        except json.JSONDecodeError:
            message = None
        error = protocol.check_auth(message)
        with contextlib.suppress(ConnectionGone):
            await self.send(protocol.auth_result(error))
        if error is not None:
            await self.drop()
        return error is None

    async def _receive_loop(self) -> None:
        while True:
            text = await self._ws.receive_text()
            try:
                message = json.loads(text)
            except json.JSONDecodeError:
                await self._warn("received a message that is not JSON")
                continue
            if not isinstance(message, dict):
                await self._warn("received a message that is not an object")
                continue
            await self._dispatch(message)

    async def _warn(self, warning: str) -> None:
        log.warning("simulator /%s: %s", self._namespace, warning)
        with contextlib.suppress(ConnectionGone):
            await self.send(protocol.communication_warning(warning))

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "channelCreate":
            await self._create_channel(message)
        elif kind == "channelSend":
            channel = self._channels.get(message.get("channelId"))  # type: ignore[arg-type]
            if channel is not None:  # sends to a finished channel (a late cancel) are ignored
                channel.receive(message.get("message"))
        elif kind == "rpcCall":
            await self._call(message)
        elif kind == "keepAlive":  # only the JavaScript SDK sends it, and it expects the ack
            with contextlib.suppress(ConnectionGone):
                await self.send({"type": "keepAliveAck"})
        elif kind in ("channelAck", "communicationWarning"):
            if kind == "communicationWarning":
                log.warning("client communication warning: %s", message.get("warning"))
        else:
            await self._warn(f"unsupported message type {kind!r}")

    async def _call(self, message: dict[str, Any]) -> None:
        call_id = message.get("callId")
        if not isinstance(call_id, int):
            await self._warn("rpcCall without an integer callId")
            return
        endpoint = str(message.get("endpoint"))
        try:
            reply = protocol.rpc_result(
                call_id, rpc.call(self._state, self._namespace, endpoint, message.get("parameter"))
            )
        except rpc.RpcFailure as failure:
            reply = protocol.rpc_error(call_id, failure.error)
        with contextlib.suppress(ConnectionGone):
            await self.send(reply)

    async def _create_channel(self, message: dict[str, Any]) -> None:
        channel_id = message.get("channelId")
        if not isinstance(channel_id, int) or channel_id in self._channels:
            await self._warn(f"channelCreate with an invalid or duplicate channelId {channel_id!r}")
            return
        endpoint = message.get("endpoint")
        params = message.get("creationParameter")
        channel: Channel
        if self._namespace == "llm" and endpoint == "predict":
            channel = PredictionChannel(self, channel_id, self._state, params)
        elif self._namespace in ("llm", "embedding") and endpoint in ("getOrLoad", "loadModel"):
            kind: ModelType = "llm" if self._namespace == "llm" else "embedding"
            channel = LoadChannel(self, channel_id, self._state, params, kind=kind, always_load=endpoint == "loadModel")
        elif self._namespace == "repository" and endpoint == "downloadModel":
            channel = DownloadChannel(self, channel_id, self._state, params)
        else:
            # LM Studio answers an unknown endpoint with a warning and leaves the channel open
            # (nothing more ever arrives on it); the SDKs log the warning and time out.
            await self._warn(f"Unknown channel endpoint {self._namespace}/{endpoint} (channel {channel_id})")
            return
        self._channels[channel_id] = channel
        task = asyncio.create_task(self._run_channel(channel_id, channel), name=f"sim-{endpoint}-{channel_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_channel(self, channel_id: int, channel: Channel) -> None:
        try:
            await channel.run()
        except ConnectionGone:
            pass
        finally:
            self._channels.pop(channel_id, None)
