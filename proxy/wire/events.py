"""SSE event shapes: each `data:` frame of a streaming response is one of these JSON objects.

TypedDicts, built as plain dicts on the per-token path (`proxy/sse.py` encodes them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import Discriminator, Field
from typing_extensions import TypedDict

from proxy.wire.bodies import CancelMode, ResponseBlock, ToolCall, Usage

STREAM_DESCRIPTION = """\
Server-sent events. Every frame is a single `data:` line holding a JSON object whose `event` field
names it (a `StreamEvent`); there are no `event:` lines. The stream ends with exactly one terminal
event (`response.completed`, `response.error` or `response.cancelled`), then `data: [DONE]`, then
the server closes the response. Once the stream has started, errors are `response.error` events,
never HTTP errors.

Events, in order: `response.processing`, `response.created`, then any of `response.heartbeat`,
`reasoning.started` / `reasoning.content` / `reasoning.completed`, `response.content_delta`,
`response.block` (a tool call), then the terminal event."""


class ResponseProcessingEvent(TypedDict):
    """First event; repeated while a model loads."""

    event: Literal["response.processing"]
    status: Literal["processing"]
    thread_id: str
    message: str


class ResponseCreatedEvent(TypedDict):
    """The prediction was accepted."""

    event: Literal["response.created"]
    status: Literal["in_progress"]
    thread_id: str
    response_id: str
    user_message_id: str | None
    trace_id: str
    output_mode: str
    model: str


class ResponseHeartbeatEvent(TypedDict):
    """Sent every heartbeat_seconds with nothing else to send."""

    event: Literal["response.heartbeat"]
    thread_id: str


class ReasoningStartedEvent(TypedDict):
    """A reasoning section begins."""

    event: Literal["reasoning.started"]
    thread_id: str


class ReasoningContentEvent(TypedDict):
    """A reasoning fragment."""

    event: Literal["reasoning.content"]
    content: str


class ReasoningCompletedEvent(TypedDict):
    """The reasoning section ends."""

    event: Literal["reasoning.completed"]
    thread_id: str


class ContentDeltaEvent(TypedDict):
    """A content fragment; joining every delta gives the final response (text mode)."""

    event: Literal["response.content_delta"]
    delta: str


class ToolCallBlock(TypedDict):
    """A call the model made: the client runs it, unless `server_label` says the proxy does (MCP)."""

    type: Literal["tool_call"]
    id: str
    tool_name: str
    tool_arguments: dict[str, Any]
    server_label: NotRequired[Annotated[str, Field(description="The MCP server the proxy runs this call on")]]


class ToolResultBlock(TypedDict):
    """The result of a call the proxy ran (an MCP tool, or an error for a tool nobody offered)."""

    type: Literal["tool_result"]
    id: Annotated[str, Field(description="The id of the call")]
    tool_name: str
    tool_result: str
    is_error: bool
    server_label: NotRequired[str]


class ResponseBlockEvent(TypedDict):
    """A tool call the model made, or the result of one the proxy ran."""

    event: Literal["response.block"]
    thread_id: str
    block: Annotated[ToolCallBlock | ToolResultBlock, Discriminator("type")]


class ResponseCompletedEvent(TypedDict):
    """Terminal: normal end."""

    event: Literal["response.completed"]
    status: Literal["completed"]
    thread_id: str
    response_id: str
    response: NotRequired[Annotated[str, Field(description="Full text; absent in structured/blocks mode")]]
    response_blocks: NotRequired[
        Annotated[list[ResponseBlock] | None, Field(description="structured/blocks mode only")]
    ]
    reasoning_content: str | None
    usage: Usage
    tool_calls: NotRequired[list[ToolCall]]
    stop_reason: NotRequired[Annotated[str, Field(description="`tool_calls` when the model called tools")]]


class ResponseErrorEvent(TypedDict):
    """Terminal: LM Studio failed or vanished mid-stream, or the proxy is shutting down."""

    event: Literal["response.error"]
    status: Literal["failed"]
    thread_id: str
    message: str
    code: str


class ResponseCancelledEvent(TypedDict):
    """Terminal: only after the cancel endpoint."""

    event: Literal["response.cancelled"]
    status: Literal["cancelled"]
    thread_id: str
    partial_content_length: Annotated[int, Field(description="Characters generated before the stop")]
    cancel_mode: CancelMode


StreamEvent = Annotated[
    ResponseProcessingEvent
    | ResponseCreatedEvent
    | ResponseHeartbeatEvent
    | ReasoningStartedEvent
    | ReasoningContentEvent
    | ReasoningCompletedEvent
    | ContentDeltaEvent
    | ResponseBlockEvent
    | ResponseCompletedEvent
    | ResponseErrorEvent
    | ResponseCancelledEvent,
    Discriminator("event"),
]
"""One SSE `data:` frame of a streaming response (the final `[DONE]` frame is not JSON)."""
