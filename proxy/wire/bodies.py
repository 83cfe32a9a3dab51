"""Response shapes: the JSON bodies the proxy answers with.

TypedDicts, not models: handlers build plain dicts (mypy checks every key against these
declarations) and they are encoded as they are. The OpenAPI document is generated from them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from proxy.errors import ErrorType

Timestamp = Annotated[str, Field(description="ISO-8601, UTC", json_schema_extra={"format": "date-time"})]
CancelMode = Literal["quick_edit", "keep_partial"]


class FieldError(TypedDict):
    field: str
    message: str


class ErrorDetail(TypedDict):
    code: str
    message: str
    system_message: Annotated[str, Field(description="Same as message")]
    type: ErrorType
    status: Annotated[int, Field(description="The HTTP status, repeated")]
    details: Annotated[
        dict[str, Any], Field(description="422: `errors` lists every field that failed validation ([FieldError])")
    ]
    trace_id: Annotated[str, Field(description="The request id, as in the X-Request-Id header")]
    timestamp: Timestamp


class ErrorEnvelope(TypedDict):
    """Every error, on every endpoint, has this body and the matching HTTP status."""

    success: Literal[False]
    error: ErrorDetail


class Usage(TypedDict):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    stop_reason: NotRequired[
        Annotated[str | None, Field(description="LM Studio's stop reason, e.g. eosFound, maxPredictedTokensReached")]
    ]
    time_to_first_token_seconds: NotRequired[float | None]
    tokens_per_second: NotRequired[float | None]


class ResponseBlock(TypedDict):
    """One block of the generated markdown (output modes structured and blocks)."""

    type: Literal["heading", "paragraph", "list", "code", "quote", "rule"]
    text: NotRequired[Annotated[str, Field(description="heading, paragraph, code, quote")]]
    level: NotRequired[Annotated[int, Field(ge=1, le=6, description="heading")]]
    ordered: NotRequired[Annotated[bool, Field(description="list")]]
    items: NotRequired[Annotated[list[str | ResponseBlock], Field(description="list: item texts, or nested lists")]]
    language: NotRequired[Annotated[str | None, Field(description="code")]]


class OutputText(TypedDict):
    type: Literal["output_text"]
    text: str
    annotations: list[Any]


class OutputMessage(TypedDict):
    type: Literal["message"]
    id: str
    status: str
    role: Literal["assistant"]
    content: list[OutputText]


class ToolCall(TypedDict):
    """A function call the model made; the client runs it and sends the result back as a
    `{role: "tool", tool_call_id, content}` input on the same thread."""

    id: str
    tool_name: str
    tool_arguments: Annotated[dict[str, Any], Field(description="The arguments, as an object")]
    server_label: NotRequired[
        Annotated[str, Field(description="Stored calls only: the MCP server the proxy ran this call on")]
    ]


class ResponseBody(TypedDict):
    """The non-streaming answer: satisfies both the v5 SDK and aitronos-freddy's ModelResponse."""

    success: Literal[True]
    thread_id: str
    response_id: str
    response: Annotated[str, Field(description="The full text, rendered for the output mode")]
    is_summarized: bool
    response_blocks: list[ResponseBlock] | None
    assistant_id: str | None
    id: Annotated[str, Field(description="Same as response_id")]
    object: Literal["response"]
    created_at: Annotated[int, Field(description="Unix time in seconds")]
    status: Literal["completed", "cancelled"]
    model: str
    output: list[OutputMessage]
    usage: Usage
    tool_calls: NotRequired[Annotated[list[ToolCall], Field(description="Calls the client must run (with tools)")]]
    stop_reason: NotRequired[Annotated[str, Field(description="`tool_calls` when the model called tools")]]


class CancelStreamResponse(TypedDict):
    """quick_edit (before quick_edit_seconds): both messages deleted; keep_partial: the partial text is saved.

    Idempotent: a repeated cancel returns the same body.
    """

    success: Literal[True]
    cancel_mode: CancelMode
    elapsed_seconds: Annotated[float, Field(description="Time since the stream's request was accepted")]
    user_message_deleted: bool
    assistant_response_deleted: bool
    partial_content_saved: bool


class ActiveStream(TypedDict):
    thread_id: str
    response_id: str
    model: str
    elapsed_seconds: float
    partial_content_length: int
    cancel_mode_now: Annotated[CancelMode, Field(description="What a cancel now would do")]
    stopping: Annotated[bool, Field(description="A stop was requested; the stream is finishing")]
    running_tool: Annotated[
        str | None, Field(description="The MCP tool the proxy is running now (a stop lets it finish)")
    ]


class ActiveStreamList(TypedDict):
    """The caller's running streams."""

    object: Literal["list"]
    data: list[ActiveStream]


class UsageRecord(TypedDict):
    response_id: str
    thread_id: str
    model: str | None
    status: Annotated[str, Field(description="in_progress, completed, failed, cancelled or interrupted")]
    stop_reason: str | None
    cancel_mode: str | None
    input_tokens: int
    output_tokens: int
    total_tokens: int
    created_at: Timestamp


class UsageList(TypedDict):
    """The caller's usage records, newest first."""

    object: Literal["list"]
    data: list[UsageRecord]
    has_more: bool


class Model(TypedDict):
    """A model as the playground lists it (`data`)."""

    id: str
    object: Literal["model"]
    display_name: str
    loaded: bool
    context_length: int | None


class ModelPricing(TypedDict):
    message: str


class V5Model(TypedDict):
    """A model in v5's shape (`ModelResponse`); `key` is what a request's `model` names."""

    id: Annotated[str, Field(description="The LM Studio model identifier (same as key)")]
    key: str
    name: Annotated[str, Field(description="LM Studio's display name")]
    provider: str
    is_visible_in_ui: bool
    is_deprecated: bool
    availability_status: Literal["general_availability"]
    capabilities: NotRequired[
        Annotated[
            list[str],
            Field(
                description="text_generation, conversation, streaming; vision and tool_calling as LM Studio reports "
                "them (vision, trainedForToolUse). Absent with include_capabilities=false."
            ),
        ]
    ]
    context_window: Annotated[
        int | None, Field(description="The loaded context length, else the model's maximum (tokens)")
    ]
    loaded: bool
    pricing: NotRequired[ModelPricing]
    description: NotRequired[str]
    model_version: NotRequired[str | None]
    max_context_length: NotRequired[int | None]
    architecture: NotRequired[str | None]
    params_string: NotRequired[str | None]
    format: NotRequired[str | None]
    size_bytes: NotRequired[int | None]
    last_used_at: NotRequired[Annotated[str | None, Field(description="The caller's last use (include_recent_usage)")]]


class ModelList(TypedDict):
    """The LM Studio models the proxy can use, loaded and downloaded: v5's `ModelsListResponse`
    (`models`, `total_count`) and, beside it, the playground's listing (`data`, `aliases`)."""

    models: list[V5Model]
    total_count: int
    object: Literal["list"]
    data: list[Model]
    aliases: Annotated[dict[str, str], Field(description="alias → model id")]


class OutputModeInfo(TypedDict):
    mode: str
    description: str
    is_default: bool


class OutputModes(TypedDict):
    success: Literal[True]
    output_modes: list[OutputModeInfo]


class ReasoningLevelInfo(TypedDict):
    level: str
    description: str
    is_default: bool


class ReasoningLevels(TypedDict):
    success: Literal[True]
    reasoning_levels: list[ReasoningLevelInfo]


class LMStudioHost(TypedDict):
    """One configured LM Studio host (`lmstudio.hosts`), as the proxy last saw it."""

    host: Annotated[str, Field(description="The host as configured (or where the proxy looks for it)")]
    state: Annotated[
        Literal["up", "down", "unknown"],
        Field(description="down: its last contact failed; it is skipped while another host has the model"),
    ]
    active_streams: int
    loaded_models: list[str]
    downloaded_models: list[str]
    error: NotRequired[str]


class LMStudioHealth(TypedDict):
    reachable: Annotated[bool, Field(description="Whether at least one LM Studio host answers")]
    host: NotRequired[str | None]
    looked_at: Annotated[str, Field(description="Where the proxy looks for LM Studio, in words")]
    loaded_models: NotRequired[list[str]]
    error: NotRequired[str]
    hosts: NotRequired[list[LMStudioHost]]


class Health(TypedDict):
    """The details need a key when auth.api_keys is configured; without one, only `status`."""

    status: Literal["ok", "degraded"]
    lmstudio: NotRequired[LMStudioHealth]
    active_streams: NotRequired[int]
    database: NotRequired[str]
    time: NotRequired[Timestamp]


class Thread(TypedDict):
    id: Annotated[str, Field(description="thrd_…")]
    object: Literal["thread"]
    created_at: Timestamp
    updated_at: Timestamp
    organization_id: str
    message_count: int
    last_message_at: Timestamp | None
    title: str | None
    metadata: dict[str, Any]
    assistant_id: str | None
    status: Literal["streaming", "inactive"]
    visible_in_ui: bool
    last_model_used: str | None
    is_pinned: bool
    pinned_at: Timestamp | None


class ThreadList(TypedDict):
    object: Literal["list"]
    data: list[Thread]
    first_id: str | None
    last_id: str | None
    has_more: bool
    limit: int
    total: NotRequired[Annotated[int, Field(description="Only with include_total=true")]]


class ThreadsDeleted(TypedDict):
    deleted: int
    message: str


class ThreadPin(TypedDict):
    id: str
    is_pinned: bool
    pinned_at: Timestamp | None
    message: str


class Message(TypedDict):
    id: Annotated[str, Field(description="msg_…")]
    object: Literal["thread.message"]
    created_at: Timestamp
    updated_at: NotRequired[Annotated[Timestamp, Field(description="Only in the answer to an update")]]
    thread_id: str
    role: Literal["user", "assistant", "system", "tool"]
    content: Annotated[str, Field(description="Always a string (rendered for output_mode, if given)")]
    tool_calls: NotRequired[Annotated[list[ToolCall], Field(description="An assistant message's tool calls")]]
    tool_call_id: NotRequired[Annotated[str, Field(description="A tool message: the call it answers")]]
    metadata: Annotated[
        dict[str, Any], Field(description="A stopped response's partial text has cancelled: true (and cancel_reason)")
    ]
    response_blocks: list[ResponseBlock] | None
    deleted_at: NotRequired[Annotated[Timestamp, Field(description="Soft-deleted by an edit, branch or reset")]]


class MessageList(TypedDict):
    object: Literal["list"]
    data: list[Message]
    first_id: str | None
    last_id: str | None
    has_more: bool


class MessageDeleted(TypedDict):
    id: str
    deleted: Literal[True]
    object: Literal["thread.message.deleted"]


#: A response header of createResponse, on the JSON answer and on the SSE stream's headers.
OVERHEAD_HEADER = "X-Proxy-Overhead-Ms"
OVERHEAD_HEADER_DESCRIPTION = (
    "Milliseconds the proxy spent outside LM Studio: before it was asked (less what it waited on LM Studio meanwhile: "
    "its model listing, image uploads), and after it was done (a stream: from its first answer to these headers, "
    "which leave with the first token when it answers within 0.25 s)"
)
