"""LM Studio's websocket envelopes: authentication, channel and RPC messages, error shapes.

The Python SDK tears the whole socket down on any top-level message type it does not
know, so the simulator only ever sends the types built here (plus `keepAliveAck`, sent
only in answer to a `keepAlive`, which only the JavaScript SDK sends).
"""

from __future__ import annotations

import json
from typing import Any

MAX_MESSAGE_BYTES = 64 * 1024  # the Python SDK's websocket frame limit
NAMESPACES = ("llm", "embedding", "files", "repository", "system")


def check_auth(message: Any) -> str | None:
    """Return None if `message` is a valid auth packet, else the reason it is not."""
    if not isinstance(message, dict):
        return "the first message must be an authentication object"
    if message.get("authVersion") != 1:
        return f"unsupported authVersion {message.get('authVersion')!r}"
    for key in ("clientIdentifier", "clientPasskey"):
        if not isinstance(message.get(key), str) or not message[key]:
            return f"missing {key}"
    return None


def auth_result(error: str | None = None) -> dict[str, Any]:
    """The auth reply; both SDKs accept a plain string as the error."""
    if error is None:
        return {"success": True}
    return {"success": False, "error": error}


def server_error(title: str, code: str | None = None, **display: Any) -> dict[str, Any]:
    """An LM Studio serialized error; `code` becomes `displayData.code` (drives SDK exception types)."""
    error: dict[str, Any] = {"title": title, "rootTitle": title}
    if code is not None:
        error["displayData"] = {"code": code, **display}
    return error


def model_not_found(query: str, available: list[str]) -> dict[str, Any]:
    return server_error(
        f'No model found that matches the query "{query}"',
        "generic.noModelMatchingQuery",
        query={"identifier": query},
        loadedModelsSample=available,
        totalLoadedModels=len(available),
    )


def channel_send(channel_id: int, message: dict[str, Any]) -> dict[str, Any]:
    return {"type": "channelSend", "channelId": channel_id, "message": message}


def channel_close(channel_id: int) -> dict[str, Any]:
    return {"type": "channelClose", "channelId": channel_id}


def channel_error(channel_id: int, error: dict[str, Any]) -> dict[str, Any]:
    return {"type": "channelError", "channelId": channel_id, "error": error}


def rpc_result(call_id: int, result: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"type": "rpcResult", "callId": call_id}
    if result is not None:
        message["result"] = result
    return message


def rpc_error(call_id: int, error: dict[str, Any]) -> dict[str, Any]:
    return {"type": "rpcError", "callId": call_id, "error": error}


def communication_warning(warning: str) -> dict[str, Any]:
    return {"type": "communicationWarning", "warning": warning}


def encode(message: dict[str, Any]) -> str:
    """Serialize one server message, refusing to exceed the client's frame limit."""
    text = json.dumps(message, separators=(",", ":"))
    if len(text.encode()) >= MAX_MESSAGE_BYTES:
        raise ValueError(f"simulator message of {len(text)} bytes exceeds the 64 KiB client limit")
    return text
