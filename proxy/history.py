"""The conversation LM Studio gets: system prompt, the thread, then the new inputs.

Messages are in the `lmstudio` SDK's chat-history form. Tool calls ride on assistant messages
(`toolCallRequest` parts) and results are `tool` messages (`toolCallResult` parts). LM Studio
must never see a broken transcript: a call with no result yet gets a "not executed" one, and a
result for no known call is dropped (its id is in the store, the model cannot use it).
"""

from __future__ import annotations

import json
from typing import Any

from proxy.wire.requests import CreateResponseRequest, FunctionTool

NOT_EXECUTED = "The tool was not executed: no result was sent for this call."
RESULT_LOST = "The result of this tool was not recorded: the proxy stopped while it ran, so it may or may not have run."

Stored = tuple[str, str, dict[str, Any]]  # role, content, metadata (as `Store.history` gives them)


def build(
    stored: list[Stored], req: CreateResponseRequest, images: dict[int, list[dict[str, Any]]] | None = None
) -> list[dict[str, Any]]:
    """The messages for LM Studio. Empty text is skipped, and consecutive assistant messages
    are merged: the SDK merges consecutive user messages itself but rejects assistant ones.
    `images` maps an input's index to its uploaded images (file handles, as message parts)."""
    messages: list[dict[str, Any]] = []
    system = [m.text() for m in req.inputs if m.role == "system"]
    if req.instructions:
        system.insert(0, req.instructions)
    if system:
        messages.append({"role": "system", "content": "\n\n".join(system)})
    new = [
        (m.role, m.text(), {"tool_call_id": m.tool_call_id} if m.tool_call_id else {}, (images or {}).get(i, []))
        for i, m in enumerate(req.inputs)
    ]
    pending: list[str] = []  # ids of calls still waiting for their result
    proxy_run: set[str] = set()  # ids of pending calls the proxy was to run (MCP)
    empty: list[dict[str, Any]] = []
    for role, text, meta, pictures in [
        *((r, t, m, empty) for r, t, m in stored),
        *(n for n in new if n[0] != "system"),
    ]:
        if role == "tool":
            call_id = meta.get("tool_call_id")
            if call_id in pending:
                pending.remove(call_id)
                messages.append(_result(call_id, text))
            continue
        _close(messages, pending, proxy_run)
        calls = meta.get("tool_calls") or [] if role == "assistant" else []
        if calls:
            parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            for call in calls:
                parts.append({"type": "toolCallRequest", "toolCallRequest": _request(call)})
                pending.append(call["id"])
                if call.get("server_label"):
                    proxy_run.add(call["id"])
            messages.append({"role": "assistant", "content": parts})
        elif pictures and role == "user":  # images: a text part (if any), then the file handles
            text_part = [{"type": "text", "text": text}] if text else []
            messages.append({"role": "user", "content": [*text_part, *pictures]})
        elif not text or role not in ("user", "assistant"):
            continue
        elif (
            role == "assistant"
            and messages
            and messages[-1]["role"] == "assistant"
            and isinstance(messages[-1]["content"], str)
        ):
            messages[-1]["content"] += "\n\n" + text
        else:
            messages.append({"role": role, "content": text})
    _close(messages, pending, proxy_run)
    return messages


def next_round(
    messages: list[dict[str, Any]], text: str, calls: list[dict[str, Any]], results: dict[str, str]
) -> list[dict[str, Any]]:
    """The conversation for the next model round: what came before, the round's text and
    calls, and a result for every call (the proxy's, or "not executed")."""
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    parts += [{"type": "toolCallRequest", "toolCallRequest": _request(call)} for call in calls]
    return [
        *messages,
        {"role": "assistant", "content": parts},
        *(_result(call["id"], results.get(call["id"], NOT_EXECUTED)) for call in calls),
    ]


def _request(call: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "id": call["id"], "name": call["tool_name"], "arguments": call["tool_arguments"]}


def _result(call_id: str, text: str) -> dict[str, Any]:
    return {"role": "tool", "content": [{"type": "toolCallResult", "toolCallId": call_id, "content": text}]}


def _close(messages: list[dict[str, Any]], pending: list[str], proxy_run: set[str]) -> None:
    """Calls left without a result get one that says so, before the conversation moves on."""
    for call_id in pending:
        messages.append(_result(call_id, RESULT_LOST if call_id in proxy_run else NOT_EXECUTED))
    pending.clear()


def tool_specs(req: CreateResponseRequest) -> list[dict[str, Any]]:
    """The request's function tools as `{name, description, parameters}` for the bridge."""
    return [
        {
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters or {"type": "object", "properties": {}},
        }
        for t in req.tools or ()
        if isinstance(t, FunctionTool)
    ]


def encode_arguments(arguments: dict[str, Any]) -> str:
    return json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
