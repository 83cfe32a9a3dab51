"""Accepting a create request: from a validated body to a registered, running stream.

The one rule that matters here: everything that can fail or wait happens *before* the stream
is registered, and from the 409 check to `registry.start()` nothing awaits, so the check cannot
go stale (two requests on one thread: exactly one runs). With SQLite, the request's rows are
stored by the stream right after LM Studio was sent the prediction (`ActiveStream.store_rows`);
with PostgreSQL, here (the database's 409 comes before LM Studio is asked).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError as PydanticValidationError

from proxy import history, images, mcp_client
from proxy.bridge import prediction_config
from proxy.errors import ResourceNotFound, ShuttingDown, ValidationError
from proxy.files import FileStore
from proxy.spec import StreamSpec
from proxy.state import Proxy, owned
from proxy.store import new_response
from proxy.streams import ActiveStream
from proxy.wire.requests import (
    NOT_SUPPORTED,
    CreateResponseRequest,
    FunctionTool,
    McpTool,
    request_errors,
    structured_schema,
)

ORGANIZATION = "org_local"


def _metadata(tool_call_id: str | None, found: list[images.Image]) -> dict[str, Any] | None:
    meta: dict[str, Any] = {"tool_call_id": tool_call_id} if tool_call_id else {}
    return {**meta, **images.note(found)} if found else meta or None


def _with_assistant(proxy: Proxy, owner: str, req: CreateResponseRequest) -> CreateResponseRequest:
    """Apply the request's assistant (or the one its thread is bound to): its instructions, model,
    sampling and output mode fill what the request leaves unset; tools it would need are a 422.

    v5: an assistant binds to a thread when the thread is created; a different one later is a 422.
    """
    bound = None
    if req.thread_id:
        thread = proxy.store.get_thread(req.thread_id)
        bound = thread["assistant_id"] if thread is not None and thread["owner"] == owner else None
    if req.assistant_id and bound and req.assistant_id != bound:
        raise ValidationError(
            f"Invalid request: assistant_id: the thread is bound to assistant {bound}",
            {"errors": [{"field": "assistant_id", "message": f"the thread is bound to assistant {bound}"}]},
        )
    assistant_id = req.assistant_id or bound
    if not assistant_id:
        return req
    assistant = owned(
        proxy.store.find_assistant(assistant_id), owner, "assistant", assistant_id, "use", field="assistant_id"
    )
    changes: dict[str, Any] = {"assistant_id": assistant_id}
    for field, key in (("instructions", "instructions"), ("model", "model"), ("temperature", "temperature"),
                       ("top_p", "top_p"), ("max_tokens", "max_tokens"), ("output_mode", "output_mode")):  # fmt: skip
        if getattr(req, field) is None and assistant.get(key) is not None:
            changes[field] = assistant[key]
    configurations = assistant.get("tool_configurations") or {}
    active = _active_tools(configurations)
    if active:  # v5 assistants carry system and streamline tools too: those do not run here
        raise ValidationError(
            f"Invalid request: assistant_id: {NOT_SUPPORTED}: the assistant's tools ({', '.join(active)})",
            {"errors": [{"field": "assistant_id", "message": f"{NOT_SUPPORTED}: its tools {', '.join(active)}"}]},
        )
    servers = _assistant_mcp_tools(configurations.get("mcp_tools") or [])
    if servers:
        changes["tools"] = [*(req.tools or ()), *servers]
        errors = request_errors(req.model_copy(update={"tools": changes["tools"]}))
        if errors:  # e.g. the assistant's server label is also one the request names
            raise ValidationError(f"Invalid request: {errors[0]['field']}: {errors[0]['message']}", {"errors": errors})
    return req.model_copy(update=changes)


def _assistant_mcp_tools(entries: list[dict[str, Any]]) -> list[McpTool]:
    """An assistant's `mcp_tools` (v5's McpToolSchema) as the request's own `{type: "mcp"}` tools."""
    tools, errors = [], []
    for i, entry in enumerate(entries):
        field = f"assistant.tool_configurations.mcp_tools[{i}]"
        # `server_description` is the user's own note on the server (the model sees each tool's own).
        entry = {k: v for k, v in entry.items() if k not in ("type", "server_description")}
        if entry.pop("connector_id", None) is not None:
            errors.append({"field": f"{field}.connector_id", "message": f"{NOT_SUPPORTED}: connectors"})
        approval = entry.pop("require_approval", None)
        if approval not in (None, "never"):
            errors.append({"field": f"{field}.require_approval", "message": f"{NOT_SUPPORTED}: approvals"})
        allowed = entry.get("allowed_tools")
        if isinstance(allowed, dict):  # {tool_names: [...]} is the other form v5 stores
            entry["allowed_tools"] = allowed.get("tool_names")
        try:
            tools.append(McpTool.model_validate({**entry, "type": "mcp"}))
        except PydanticValidationError as exc:
            errors += [{"field": f"{field}.{'.'.join(map(str, e['loc']))}", "message": e["msg"]} for e in exc.errors()]
    if errors:
        raise ValidationError(f"Invalid request: {errors[0]['field']}: {errors[0]['message']}", {"errors": errors})
    return tools


def _mcp_servers(req: CreateResponseRequest) -> list[mcp_client.McpServer]:
    servers = []
    for tool in req.tools or ():
        if isinstance(tool, McpTool) and tool.server_url:
            headers = {k: v for k, v in (tool.headers or {}).items() if v is not None}
            if tool.authorization:
                token = tool.authorization.strip()
                headers["Authorization"] = token if " " in token else f"Bearer {token}"
            allowed = frozenset(tool.allowed_tools) if tool.allowed_tools is not None else None
            servers.append(mcp_client.McpServer(tool.server_label, tool.server_url, headers, allowed))
    return servers


def _active_tools(configurations: dict[str, Any]) -> list[str]:
    active = [
        f"system_tools.{name}"
        for name, setting in (configurations.get("system_tools") or {}).items()
        if isinstance(setting, dict) and setting.get("mode", "off") != "off"
    ]
    active += [f"streamline_tools[{i}]" for i, _ in enumerate(configurations.get("streamline_tools") or [])]
    return active


def _reset_point(proxy: Proxy, owner: str, response_id: str, thread_id: str | None) -> tuple[str, tuple[str, bool]]:
    """previous_response_id: the thread to continue, and the last message kept (the response's)."""
    response = proxy.store.get_response(response_id)
    if response is None or response["owner"] != owner or (thread_id and response["thread_id"] != thread_id):
        raise ResourceNotFound(f"Response {response_id} not found", {"field": "previous_response_id"})
    last = response["assistant_message_id"] or response["user_message_id"]
    if last is None or proxy.store.get_message(response["thread_id"], last) is None:
        raise ResourceNotFound(f"Response {response_id} has no messages left to reset to")
    return response["thread_id"], (last, False)


async def accept(proxy: Proxy, owner: str, req: CreateResponseRequest, trace_id: str, files: FileStore) -> ActiveStream:
    """Resolve the model, check the thread, store the user message, and start the stream."""
    limit = proxy.config.limits.max_inputs
    if len(req.inputs) > limit:  # each one is a stored message and part of the history to build
        raise ValidationError(
            f"Invalid request: inputs: at most {limit} messages per request (limits.max_inputs)",
            {"errors": [{"field": "inputs", "message": f"must have at most {limit} messages"}]},
        )
    if not proxy.registry.accepting:
        raise ShuttingDown("The proxy is shutting down; no new responses are accepted.")
    req = _with_assistant(proxy, owner, req)
    # Time spent waiting on LM Studio before the prediction (its model listing, image uploads)
    # is LM Studio's, not the proxy's: X-Proxy-Overhead-Ms leaves it out (`StreamSpec.lm_waited`).
    lm_waited = 0.0
    model = proxy.catalog.lookup(req.model)
    if model is None:
        asked = time.perf_counter()
        model = await proxy.catalog.resolve(req.model)
        lm_waited += time.perf_counter() - asked
    found = await images.collect(files, owner, req)
    backend = proxy.backends.choose(model)  # the LM Studio host it runs on (and images are uploaded to)
    handles: dict[int, list[dict[str, Any]]] = {}
    if found:
        if proxy.catalog.vision(model) is False:
            raise ValidationError(
                f"Invalid request: inputs: the model {model} has no vision: {NOT_SUPPORTED}: images for it",
                {"errors": [{"field": "inputs", "message": f"images need a vision model; {model} is not one"}]},
            )
        asked = time.perf_counter()
        for image in found:  # uploaded to LM Studio now, so the prediction can start at once
            handles.setdefault(image.index, []).append(await backend.bridge.prepare_image(image.data, image.name))
        lm_waited += time.perf_counter() - asked
    function_tools = frozenset(t.name for t in req.tools or () if isinstance(t, FunctionTool))
    mcp_tools = await mcp_client.discover(
        _mcp_servers(req), proxy.config.tools.mcp_connect_timeout_seconds, set(function_tools)
    )
    tool_specs = history.tool_specs(req) + [tool.spec() for tool in mcp_tools.values()]
    # From here to registry.start() nothing awaits.
    thread_id = req.thread_id
    cut: tuple[str, bool] | None = None
    if req.previous_response_id:
        thread_id, cut = _reset_point(proxy, owner, req.previous_response_id, thread_id)
    stored: list[history.Stored] = []
    if thread_id:
        owned(proxy.store.get_thread(thread_id), owner, "thread", thread_id, "use")
        proxy.registry.check_free(thread_id)
        for name, inclusive in (("edit_message_id", True), ("previous_message_id", False)):
            message_id = getattr(req, name)
            if message_id:
                message = proxy.store.get_message(thread_id, message_id)
                if message is None or message["deleted_at"] is not None:
                    raise ResourceNotFound(f"Message {message_id} not found in thread {thread_id}", {"field": name})
                cut = (message_id, inclusive)
        stored = proxy.store.history(thread_id, before=cut)
    thread_fields = {
        "organization_id": req.organization_id or ORGANIZATION,
        "assistant_id": req.assistant_id,
        "metadata": req.metadata or {},
        "visible_in_ui": req.store is not False,
    }
    inputs: list[tuple[str, str, dict[str, Any] | None]] = [
        (m.role, m.text(), _metadata(m.tool_call_id, [im for im in found if im.index == i]))
        for i, m in enumerate(req.inputs)
        if m.role != "system"
    ]
    rows = new_response(owner, thread_id or "", model, inputs, thread_fields, cut)
    if proxy.store.shared:
        # Replicas: the database's 409 (another replica runs this thread) must come before LM
        # Studio is asked. One process: the registry is the 409, and the rows are stored by the
        # stream once the prediction is on its way, so the commit overlaps LM Studio's work.
        proxy.store.store_response(rows)
    spec = StreamSpec(
        owner=owner,
        thread_id=rows.thread_id,
        response_id=rows.response_id,
        message_ids=rows.message_ids,
        thread_created=rows.thread_created,
        model=model,
        messages=history.build(stored, req, handles),
        prediction_config=prediction_config(
            req.temperature, req.top_p, req.max_tokens, structured_schema(req), tool_specs
        ),
        output_mode=req.output_mode or "text",
        trace_id=trace_id,
        streaming=bool(req.stream),
        function_tools=function_tools,
        mcp_tools=mcp_tools,
        rows=None if proxy.store.shared else rows,
        lm_waited=lm_waited,
    )
    return proxy.registry.start(spec, backend)
