"""The OpenAPI 3.1 description of the HTTP API, hand-written as data and served at `/openapi.json`.

Hand-written rather than generated: the handlers parse bodies by hand (proxy/inputs.py), so
there is nothing to introspect. tests/test_openapi.py keeps it honest: the document must
validate as OpenAPI 3.1, and its (path, method) pairs must equal the app's routes.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

import proxy

JSON = dict[str, Any]


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema_type: str, description: str | None = None, **extra: Any) -> JSON:
    out: JSON = {"type": [schema_type, "null"], **extra}
    if description:
        out["description"] = description
    return out


def _obj(properties: JSON, required: list[str] | None = None, description: str | None = None) -> JSON:
    out: JSON = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if description:
        out["description"] = description
    return out


def _list_of(item: str, extra: JSON | None = None, required: list[str] | None = None, description: str = "") -> JSON:
    properties: JSON = {"object": {"const": "list"}, "data": {"type": "array", "items": _ref(item)}}
    return _obj({**properties, **(extra or {})}, ["object", "data", *(required or [])], description or None)


STR: JSON = {"type": "string"}
INT: JSON = {"type": "integer"}
NUM: JSON = {"type": "number"}
BOOL: JSON = {"type": "boolean"}
TIMESTAMP: JSON = {"type": "string", "format": "date-time", "description": "ISO-8601, UTC"}
NULL_TIMESTAMP: JSON = {"type": ["string", "null"], "format": "date-time"}
ANY_OBJECT: JSON = {"type": "object", "additionalProperties": True}
PAGE_FIELDS: JSON = {
    "first_id": _nullable("string"),
    "last_id": _nullable("string"),
    "has_more": BOOL,
}

# -- schemas -------------------------------------------------------------------------------

_ERROR_CODES = [
    "INVALID_REQUEST",
    "AUTHENTICATION_REQUIRED",
    "INSUFFICIENT_PERMISSIONS",
    "RESOURCE_NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "STREAM_ALREADY_ACTIVE",
    "PAYLOAD_TOO_LARGE",
    "VALIDATION_ERROR",
    "MODEL_BACKEND_UNAVAILABLE",
    "SERVER_SHUTTING_DOWN",
    "INTERNAL_ERROR",
]

_ERROR_FIELDS = ["code", "message", "system_message", "type", "status", "details", "trace_id", "timestamp"]

ERROR_ENVELOPE: JSON = _obj(
    {
        "success": {"const": False},
        "error": _obj(
            {
                "code": {"type": "string", "description": "One of: " + ", ".join(_ERROR_CODES)},
                "message": STR,
                "system_message": {"type": "string", "description": "Same as message"},
                "type": {
                    "type": "string",
                    "enum": ["client_error", "authentication_error", "authorization_error", "server_error"],
                },
                "status": {"type": "integer", "description": "The HTTP status, repeated"},
                "details": {
                    "type": "object",
                    "additionalProperties": True,
                    "properties": {
                        "errors": {
                            "type": "array",
                            "description": "422 only: every field that failed validation",
                            "items": _obj({"field": STR, "message": STR}, ["field", "message"]),
                        }
                    },
                },
                "trace_id": {"type": "string", "description": "The request id, as in the X-Request-Id header"},
                "timestamp": TIMESTAMP,
            },
            _ERROR_FIELDS,
        ),
    },
    ["success", "error"],
    "Every error, on every endpoint, has this body and the matching HTTP status.",
)

CONTENT_BLOCK: JSON = _obj(
    {
        "type": {"type": "string", "description": "`text` or `input_text`; other types (images, files) are ignored"},
        "text": STR,
    },
    description="A content block; only text blocks are used.",
)

INPUT_MESSAGE: JSON = {
    "type": "object",
    "properties": {
        "role": {"type": "string", "enum": ["user", "assistant", "system"], "default": "user"},
        "content": {
            "oneOf": [STR, {"type": "array", "items": {"oneOf": [STR, _ref("ContentBlock")]}}],
            "description": "A string, or a list of text blocks (joined with newlines)",
        },
        "texts": {
            "type": "array",
            "items": _obj({"text": STR}, ["text"]),
            "description": "Legacy form of content, used when content is absent",
        },
    },
    "anyOf": [{"required": ["content"]}, {"required": ["texts"]}],
}


def _alias(of: str, schema: JSON) -> JSON:
    return {**schema, "description": f"Alias of `{of}` (camelCase, as the aitronos-freddy SDK sends it)"}


_TEMPERATURE: JSON = {"type": "number", "minimum": 0, "maximum": 2}
_TOP_P: JSON = {"type": "number", "minimum": 0, "maximum": 1}
_MAX_TOKENS: JSON = {"type": "integer", "minimum": 1, "maximum": 1_000_000}
_OUTPUT_MODE: JSON = {"type": "string", "enum": ["text", "plain", "structured", "blocks"], "default": "text"}
_ID: JSON = {"type": "string", "maxLength": 200}

CREATE_RESPONSE_REQUEST: JSON = {
    "type": "object",
    "description": "Unknown fields are ignored, not rejected. Where both spellings are given, the snake_case one wins.",
    "required": ["inputs"],
    "additionalProperties": True,
    "properties": {
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": _ref("InputMessage"),
            "description": "The conversation to add; must contain a user message (the last one is the query). "
            "System messages join the instructions.",
        },
        "thread_id": {**_nullable("string", "Continue this thread; absent or null: create a thread"), "maxLength": 200},
        "threadId": _alias("thread_id", _ID),
        "model": {
            "type": "string",
            "maxLength": 500,
            "description": "LM Studio model key or a configured alias; absent: the configured default, "
            "else the first loaded model",
        },
        "stream": {"type": "boolean", "default": False, "description": "true: answer with text/event-stream"},
        "instructions": {"type": "string", "description": "System prompt"},
        "temperature": _TEMPERATURE,
        "top_p": _TOP_P,
        "topP": _alias("top_p", _TOP_P),
        "max_output_synapses": {**_MAX_TOKENS, "description": "Maximum tokens to generate"},
        "max_tokens": _alias("max_output_synapses", _MAX_TOKENS),
        "maxTokens": _alias("max_output_synapses", _MAX_TOKENS),
        "output_mode": _OUTPUT_MODE,
        "outputMode": _alias("output_mode", _OUTPUT_MODE),
        "organization_id": _ID,
        "organizationId": _alias("organization_id", _ID),
        "assistant_id": _ID,
        "assistantId": _alias("assistant_id", _ID),
        "metadata": {**ANY_OBJECT, "description": "Stored on a thread this request creates"},
        "store": {"type": "boolean", "default": True, "description": "false: the created thread is not visible_in_ui"},
    },
}

USAGE: JSON = _obj(
    {
        "input_tokens": INT,
        "output_tokens": INT,
        "total_tokens": INT,
        "stop_reason": _nullable("string", "LM Studio's stop reason, e.g. eosFound, maxPredictedTokensReached"),
        "time_to_first_token_seconds": _nullable("number"),
        "tokens_per_second": _nullable("number"),
    },
    ["input_tokens", "output_tokens", "total_tokens"],
)

RESPONSE_BLOCK: JSON = _obj(
    {
        "type": {"type": "string", "enum": ["heading", "paragraph", "list", "code", "quote", "rule"]},
        "text": {"type": "string", "description": "heading, paragraph, code, quote"},
        "level": {"type": "integer", "minimum": 1, "maximum": 6, "description": "heading"},
        "ordered": {"type": "boolean", "description": "list"},
        "items": {
            "type": "array",
            "items": {"oneOf": [STR, {"$ref": "#/components/schemas/ResponseBlock"}]},
            "description": "list: item texts, or nested lists",
        },
        "language": _nullable("string", "code"),
    },
    ["type"],
    "One block of the generated markdown (output modes structured and blocks).",
)

RESPONSE_BLOCKS: JSON = {"type": ["array", "null"], "items": _ref("ResponseBlock")}

RESPONSE_BODY: JSON = _obj(
    {
        "success": {"const": True},
        "thread_id": STR,
        "response_id": STR,
        "response": {"type": "string", "description": "The full text, rendered for the output mode"},
        "is_summarized": BOOL,
        "response_blocks": RESPONSE_BLOCKS,
        "assistant_id": _nullable("string"),
        "id": {"type": "string", "description": "Same as response_id"},
        "object": {"const": "response"},
        "created_at": {"type": "integer", "description": "Unix time in seconds"},
        "status": {"type": "string", "enum": ["completed", "cancelled"]},
        "model": STR,
        "output": {
            "type": "array",
            "items": _obj(
                {
                    "type": {"const": "message"},
                    "id": STR,
                    "status": STR,
                    "role": {"const": "assistant"},
                    "content": {
                        "type": "array",
                        "items": _obj(
                            {"type": {"const": "output_text"}, "text": STR, "annotations": {"type": "array"}},
                            ["type", "text", "annotations"],
                        ),
                    },
                },
                ["type", "id", "status", "role", "content"],
            ),
        },
        "usage": _ref("Usage"),
    },
    [
        "success",
        "thread_id",
        "response_id",
        "response",
        "id",
        "object",
        "created_at",
        "status",
        "model",
        "output",
        "usage",
    ],
    "The non-streaming answer: satisfies both the v5 SDK and aitronos-freddy's ModelResponse.",
)


def _event(name: str, properties: JSON, required: list[str], description: str) -> JSON:
    return _obj({"event": {"const": name}, "thread_id": STR, **properties}, ["event", *required], description)


STREAM_EVENTS: dict[str, JSON] = {
    "ResponseProcessingEvent": _event(
        "response.processing",
        {"status": {"const": "processing"}, "message": STR},
        ["status", "thread_id", "message"],
        "First event; repeated while a model loads",
    ),
    "ResponseCreatedEvent": _event(
        "response.created",
        {
            "status": {"const": "in_progress"},
            "response_id": STR,
            "user_message_id": _nullable("string"),
            "trace_id": STR,
            "output_mode": STR,
            "model": STR,
        },
        ["status", "thread_id", "response_id"],
        "The prediction was accepted",
    ),
    "ResponseHeartbeatEvent": _event(
        "response.heartbeat", {}, ["thread_id"], "Sent every heartbeat_seconds with nothing else to send"
    ),
    "ReasoningStartedEvent": _event("reasoning.started", {}, [], "A reasoning section begins"),
    "ReasoningContentEvent": _obj(
        {"event": {"const": "reasoning.content"}, "content": STR}, ["event", "content"], "A reasoning fragment"
    ),
    "ReasoningCompletedEvent": _event("reasoning.completed", {}, [], "The reasoning section ends"),
    "ContentDeltaEvent": _obj(
        {"event": {"const": "response.content_delta"}, "delta": STR},
        ["event", "delta"],
        "A content fragment; joining every delta gives the final response (text mode)",
    ),
    "ResponseCompletedEvent": _event(
        "response.completed",
        {
            "status": {"const": "completed"},
            "response_id": STR,
            "response": {"type": "string", "description": "Full text; absent in structured/blocks mode"},
            "response_blocks": {**RESPONSE_BLOCKS, "description": "structured/blocks mode only"},
            "reasoning_content": _nullable("string"),
            "usage": _ref("Usage"),
        },
        ["status", "thread_id", "response_id", "usage"],
        "Terminal: normal end",
    ),
    "ResponseErrorEvent": _event(
        "response.error",
        {"status": {"const": "failed"}, "message": STR, "code": STR},
        ["status", "thread_id", "message", "code"],
        "Terminal: LM Studio failed or vanished mid-stream, or the proxy is shutting down",
    ),
    "ResponseCancelledEvent": _event(
        "response.cancelled",
        {
            "status": {"const": "cancelled"},
            "partial_content_length": {"type": "integer", "description": "Characters generated before the stop"},
            "cancel_mode": {"type": "string", "enum": ["quick_edit", "keep_partial"]},
        },
        ["status", "thread_id", "partial_content_length", "cancel_mode"],
        "Terminal: only after the cancel endpoint",
    ),
}

STREAM_DESCRIPTION = """\
Server-sent events. Every frame is a single `data:` line holding a JSON object whose `event` field
names it (a `StreamEvent`); there are no `event:` lines. The stream ends with exactly one terminal
event (`response.completed`, `response.error` or `response.cancelled`), then `data: [DONE]`, then
the server closes the response. Once the stream has started, errors are `response.error` events,
never HTTP errors.

Events, in order: `response.processing`, `response.created`, then any of `response.heartbeat`,
`reasoning.started` / `reasoning.content` / `reasoning.completed`, `response.content_delta`,
then the terminal event."""

CANCEL_STREAM_RESPONSE: JSON = _obj(
    {
        "success": {"const": True},
        "cancel_mode": {"type": "string", "enum": ["quick_edit", "keep_partial"]},
        "elapsed_seconds": {"type": "number", "description": "Time since the stream's request was accepted"},
        "user_message_deleted": BOOL,
        "assistant_response_deleted": BOOL,
        "partial_content_saved": BOOL,
    },
    [
        "success",
        "cancel_mode",
        "elapsed_seconds",
        "user_message_deleted",
        "assistant_response_deleted",
        "partial_content_saved",
    ],
    "quick_edit (before quick_edit_seconds): both messages deleted; keep_partial: the partial text is saved. "
    "Idempotent: a repeated cancel returns the same body.",
)

THREAD: JSON = _obj(
    {
        "id": {"type": "string", "description": "thrd_…"},
        "object": {"const": "thread"},
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "organization_id": STR,
        "message_count": INT,
        "last_message_at": NULL_TIMESTAMP,
        "title": _nullable("string"),
        "metadata": ANY_OBJECT,
        "assistant_id": _nullable("string"),
        "status": {"type": "string", "enum": ["streaming", "inactive"]},
        "visible_in_ui": BOOL,
        "last_model_used": _nullable("string"),
        "is_pinned": BOOL,
        "pinned_at": NULL_TIMESTAMP,
    },
    ["id", "object", "created_at", "updated_at", "organization_id", "message_count", "status", "is_pinned"],
)

MESSAGE: JSON = _obj(
    {
        "id": {"type": "string", "description": "msg_…"},
        "object": {"const": "thread.message"},
        "created_at": TIMESTAMP,
        "updated_at": {**TIMESTAMP, "description": "Only in the answer to an update"},
        "thread_id": STR,
        "role": {"type": "string", "enum": ["user", "assistant", "system"]},
        "content": {"type": "string", "description": "Always a string (rendered for output_mode, if given)"},
        "metadata": {
            **ANY_OBJECT,
            "description": "A stopped response's partial text has cancelled: true (and cancel_reason)",
        },
        "response_blocks": RESPONSE_BLOCKS,
    },
    ["id", "object", "created_at", "thread_id", "role", "content", "metadata"],
)

THREAD_CREATE: JSON = {
    "type": "object",
    "additionalProperties": True,
    "properties": {
        "organization_id": _ID,
        "organizationId": _alias("organization_id", _ID),
        "title": {"type": ["string", "null"], "maxLength": 1000},
        "metadata": ANY_OBJECT,
        "assistant_id": {"type": ["string", "null"], "maxLength": 1000},
        "visible_in_ui": BOOL,
    },
}

THREAD_UPDATE: JSON = {
    "type": "object",
    "additionalProperties": True,
    "properties": {k: v for k, v in THREAD_CREATE["properties"].items() if "rganization" not in k},
}

SCHEMAS: dict[str, JSON] = {
    "ErrorEnvelope": ERROR_ENVELOPE,
    "ContentBlock": CONTENT_BLOCK,
    "InputMessage": INPUT_MESSAGE,
    "CreateResponseRequest": CREATE_RESPONSE_REQUEST,
    "Usage": USAGE,
    "ResponseBlock": RESPONSE_BLOCK,
    "ResponseBody": RESPONSE_BODY,
    "StreamEvent": {
        "description": "One SSE `data:` frame of a streaming response (the final `[DONE]` frame is not JSON).",
        "oneOf": [_ref(name) for name in STREAM_EVENTS],
    },
    **STREAM_EVENTS,
    "CancelStreamResponse": CANCEL_STREAM_RESPONSE,
    "ActiveStream": _obj(
        {
            "thread_id": STR,
            "response_id": STR,
            "model": STR,
            "elapsed_seconds": NUM,
            "partial_content_length": INT,
            "cancel_mode_now": {
                "type": "string",
                "enum": ["quick_edit", "keep_partial"],
                "description": "What a cancel now would do",
            },
        },
        ["thread_id", "response_id", "model", "elapsed_seconds", "partial_content_length", "cancel_mode_now"],
    ),
    "ActiveStreamList": _list_of("ActiveStream", description="The caller's running streams"),
    "UsageRecord": _obj(
        {
            "response_id": STR,
            "thread_id": STR,
            "model": _nullable("string"),
            "status": {"type": "string", "description": "in_progress, completed, failed, cancelled or interrupted"},
            "stop_reason": _nullable("string"),
            "cancel_mode": _nullable("string"),
            "input_tokens": INT,
            "output_tokens": INT,
            "total_tokens": INT,
            "created_at": TIMESTAMP,
        },
        ["response_id", "thread_id", "status", "input_tokens", "output_tokens", "total_tokens", "created_at"],
    ),
    "UsageList": _list_of("UsageRecord", {"has_more": BOOL}, ["has_more"], "The caller's usage records, newest first"),
    "Model": _obj(
        {
            "id": STR,
            "object": {"const": "model"},
            "display_name": STR,
            "loaded": BOOL,
            "context_length": _nullable("integer"),
        },
        ["id", "object", "display_name", "loaded"],
    ),
    "ModelList": _list_of(
        "Model",
        {"aliases": {"type": "object", "additionalProperties": STR, "description": "alias → model id"}},
        ["aliases"],
        "The LM Studio models the proxy can use, loaded and downloaded",
    ),
    "OutputModes": _obj(
        {
            "success": {"const": True},
            "output_modes": {
                "type": "array",
                "items": _obj({"mode": STR, "description": STR, "is_default": BOOL}, ["mode", "description"]),
            },
        },
        ["success", "output_modes"],
    ),
    "ReasoningLevels": _obj(
        {
            "success": {"const": True},
            "reasoning_levels": {
                "type": "array",
                "items": _obj({"level": STR, "description": STR, "is_default": BOOL}, ["level", "description"]),
            },
        },
        ["success", "reasoning_levels"],
    ),
    "Health": _obj(
        {
            "status": {"type": "string", "enum": ["ok", "degraded"]},
            "lmstudio": _obj(
                {
                    "reachable": BOOL,
                    "host": STR,
                    "looked_at": {"type": "string", "description": "Where the proxy looks for LM Studio, in words"},
                    "loaded_models": {"type": "array", "items": STR},
                    "error": STR,
                },
                ["reachable", "looked_at"],
            ),
            "active_streams": INT,
            "database": STR,
            "time": TIMESTAMP,
        },
        ["status", "lmstudio", "active_streams"],
    ),
    "Thread": THREAD,
    "ThreadList": _list_of(
        "Thread",
        {**PAGE_FIELDS, "limit": INT, "total": {"type": "integer", "description": "Only with include_total=true"}},
        ["has_more", "limit"],
    ),
    "ThreadCreate": THREAD_CREATE,
    "ThreadUpdate": THREAD_UPDATE,
    "ThreadsDeleted": _obj({"deleted": INT, "message": STR}, ["deleted", "message"]),
    "ThreadPin": _obj(
        {"id": STR, "is_pinned": BOOL, "pinned_at": NULL_TIMESTAMP, "message": STR},
        ["id", "is_pinned", "pinned_at", "message"],
    ),
    "Message": MESSAGE,
    "MessageList": _list_of("Message", PAGE_FIELDS, ["has_more"]),
    "MessageUpdate": {
        "type": "object",
        "additionalProperties": True,
        "properties": {"content": STR, "metadata": {**ANY_OBJECT, "description": "Merged into the stored metadata"}},
    },
    "MessageDeleted": _obj(
        {"id": STR, "deleted": {"const": True}, "object": {"const": "thread.message.deleted"}},
        ["id", "deleted", "object"],
    ),
}

# -- responses and operations --------------------------------------------------------------

ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "INVALID_REQUEST: the body is not JSON, or not an object"),
    401: ("Unauthorized", "AUTHENTICATION_REQUIRED: missing or unknown API key"),
    403: ("Forbidden", "INSUFFICIENT_PERMISSIONS: the thread belongs to another key"),
    404: ("NotFound", "RESOURCE_NOT_FOUND: unknown thread, message, model or cursor, or no active stream"),
    405: ("MethodNotAllowed", "METHOD_NOT_ALLOWED: the path exists but not with this method"),
    409: ("Conflict", "STREAM_ALREADY_ACTIVE: a response is streaming on this thread"),
    413: ("PayloadTooLarge", "PAYLOAD_TOO_LARGE: the body is over the configured limit"),
    422: ("ValidationError", "VALIDATION_ERROR: wrong or missing fields; details.errors lists them"),
    500: ("InternalError", "INTERNAL_ERROR: anything unexpected"),
    503: (
        "ServiceUnavailable",
        "MODEL_BACKEND_UNAVAILABLE: LM Studio unreachable or failed (the message says where the proxy "
        "looked and what to do); SERVER_SHUTTING_DOWN: the proxy is stopping",
    ),
}

REQUEST_ID_HEADER: JSON = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}


def _ok(schema: str, description: str, status: int = 200) -> JSON:
    return {
        str(status): {
            "description": description,
            "headers": REQUEST_ID_HEADER,
            "content": {"application/json": {"schema": _ref(schema)}},
        }
    }


def _op(
    operation_id: str,
    summary: str,
    tag: str,
    responses: JSON,
    errors: tuple[int, ...],
    *,
    body: str | None = None,
    body_required: bool = True,
    parameters: list[JSON] | None = None,
    public: bool = False,
    description: str | None = None,
) -> JSON:
    """One operation. Every operation can fail with 500; authenticated ones with 401 too."""
    statuses = {*errors, 500} | (set() if public else {401})
    op: JSON = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    op["responses"] = {
        **responses,
        **{str(s): {"$ref": f"#/components/responses/{ERROR_RESPONSES[s][0]}"} for s in sorted(statuses)},
    }
    if public:
        op["security"] = []
    return op


def _path_param(name: str, description: str) -> JSON:
    return {"name": name, "in": "path", "required": True, "schema": STR, "description": description}


def _query(name: str, schema: JSON, description: str | None = None) -> JSON:
    out: JSON = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        out["description"] = description
    return out


THREAD_ID = _path_param("thread_id", "A thread id (thrd_…); unknown ids are 404")
MESSAGE_ID = _path_param("message_id", "A message id (msg_…); unknown ids are 404")
_BOOL_PARAM: JSON = {"type": "string", "enum": ["true", "false", "1", "0", "yes", "no"]}


def _page_params(default_order: str) -> list[JSON]:
    return [
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
        _query("order", {"type": "string", "enum": ["asc", "desc"], "default": default_order}),
        _query("after", STR, "Cursor: an id from this list"),
        _query("before", STR, "Cursor: an id from this list"),
    ]


PATHS: JSON = {
    "/v1/model/response": {
        "post": _op(
            "createResponse",
            "Create a response (JSON, or SSE with stream: true)",
            "responses",
            {
                "200": {
                    "description": "The response: one JSON body, or (stream: true) an SSE stream",
                    "headers": REQUEST_ID_HEADER,
                    "content": {
                        "application/json": {"schema": _ref("ResponseBody")},
                        "text/event-stream": {"schema": {"type": "string", "description": STREAM_DESCRIPTION}},
                    },
                }
            },
            (400, 403, 404, 409, 413, 422, 503),
            body="CreateResponseRequest",
            description="The user message is stored when the request is accepted, the assistant message when "
            "the prediction ends.\n\n" + STREAM_DESCRIPTION,
        )
    },
    "/v1/model/response/output-modes": {
        "get": _op("listOutputModes", "List output modes", "responses", _ok("OutputModes", "The output modes"), ())
    },
    "/v1/model/response/reasoning-levels": {
        "get": _op(
            "listReasoningLevels",
            "List reasoning levels",
            "responses",
            _ok("ReasoningLevels", "The reasoning levels"),
            (),
        )
    },
    "/v1/model/response/active": {
        "get": _op(
            "listActiveStreams",
            "List the caller's running streams (proxy addition)",
            "responses",
            _ok("ActiveStreamList", "The running streams"),
            (),
        )
    },
    "/v1/model/response/{thread_id}/cancel": {
        "parameters": [THREAD_ID],
        "post": _op(
            "cancelStream",
            "Cancel the stream running on a thread",
            "responses",
            _ok("CancelStreamResponse", "The stream was stopped (or had been: the same body again)"),
            (403, 404),
            description="No body. 404 `No active stream found for this thread` when nothing runs there.",
        ),
    },
    "/v1/models": {"get": _op("listModels", "List LM Studio models", "models", _ok("ModelList", "The models"), (503,))},
    "/v1/usage": {
        "get": _op(
            "listUsage",
            "List the caller's usage records (proxy addition)",
            "usage",
            _ok("UsageList", "Usage records, newest first"),
            (422,),
            parameters=[
                _query("thread_id", STR, "Only this thread's records"),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
            ],
        )
    },
    "/health": {
        "get": _op(
            "health",
            "Proxy status, and whether LM Studio is reachable",
            "meta",
            _ok("Health", "The status (200 also when LM Studio is unreachable: status degraded)"),
            (),
            public=True,
        )
    },
    "/v1/threads": {
        "get": _op(
            "listThreads",
            "List the caller's threads",
            "threads",
            _ok("ThreadList", "A page of threads"),
            (404, 422),
            parameters=[
                *_page_params("desc"),
                _query("organization_id", STR),
                _query("assistant_id", STR),
                _query("visible_in_ui", _BOOL_PARAM),
                _query("is_pinned", _BOOL_PARAM),
                _query("include_total", _BOOL_PARAM, "Add `total` to the answer"),
            ],
        ),
        "post": _op(
            "createThread",
            "Create a thread",
            "threads",
            _ok("Thread", "The new thread", 201),
            (400, 413, 422),
            body="ThreadCreate",
            body_required=False,
        ),
        "delete": _op(
            "deleteThreads",
            "Delete all the caller's threads (except any streaming one)",
            "threads",
            _ok("ThreadsDeleted", "How many were deleted"),
            (),
            parameters=[_query("organization_id", STR, "Only this organization's threads")],
        ),
    },
    "/v1/threads/{thread_id}": {
        "parameters": [THREAD_ID],
        "get": _op("getThread", "Get a thread", "threads", _ok("Thread", "The thread"), (403, 404)),
        "patch": _op(
            "updateThread",
            "Update a thread",
            "threads",
            _ok("Thread", "The updated thread"),
            (400, 403, 404, 413, 422),
            body="ThreadUpdate",
        ),
        "delete": _op(
            "deleteThread",
            "Delete a thread and its messages",
            "threads",
            {"204": {"description": "Deleted", "headers": REQUEST_ID_HEADER}},
            (403, 404, 409),
        ),
    },
    "/v1/threads/{thread_id}/pin": {
        "parameters": [THREAD_ID],
        "post": _op("pinThread", "Pin a thread", "threads", _ok("ThreadPin", "Pinned"), (403, 404)),
    },
    "/v1/threads/{thread_id}/unpin": {
        "parameters": [THREAD_ID],
        "post": _op("unpinThread", "Unpin a thread", "threads", _ok("ThreadPin", "Unpinned"), (403, 404)),
    },
    "/v1/threads/{thread_id}/messages": {
        "parameters": [THREAD_ID],
        "get": _op(
            "listMessages",
            "List a thread's messages",
            "messages",
            _ok("MessageList", "A page of messages"),
            (403, 404, 422),
            parameters=[
                *_page_params("asc"),
                _query("output_mode", _OUTPUT_MODE, "Render assistant messages for this output mode"),
            ],
        ),
    },
    "/v1/threads/{thread_id}/messages/{message_id}": {
        "parameters": [THREAD_ID, MESSAGE_ID],
        "patch": _op(
            "updateMessage",
            "Update a message",
            "messages",
            _ok("Message", "The updated message"),
            (400, 403, 404, 409, 413, 422),
            body="MessageUpdate",
        ),
        "delete": _op(
            "deleteMessage",
            "Delete a message",
            "messages",
            _ok("MessageDeleted", "Deleted"),
            (403, 404, 409),
        ),
    },
    "/metrics": {
        "get": _op(
            "getMetrics",
            "Prometheus metrics: requests, active streams, time to first token, relay latency, cancels",
            "meta",
            {"200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": STR}}}},
            (),
            public=True,
        )
    },
    "/openapi.json": {
        "get": _op(
            "getOpenAPI",
            "This document",
            "meta",
            {"200": {"description": "The OpenAPI document", "content": {"application/json": {"schema": ANY_OBJECT}}}},
            (),
            public=True,
        )
    },
    "/": {
        "get": _op(
            "playground",
            "The playground: a chat page in the browser",
            "meta",
            {"200": {"description": "The playground page", "content": {"text/html": {"schema": STR}}}},
            (),
            public=True,
        )
    },
}

INFO_DESCRIPTION = """\
The Aitronos "Freddy" responses/threads API, served on localhost and backed by LM Studio.

JSON everywhere, snake_case keys. Every response carries `X-Request-Id`; error bodies repeat it as
`trace_id`. Every error has the `ErrorEnvelope` body and the matching status: besides the
statuses listed per operation, a known path with a method it does not serve is a 405, and an
unknown path a 404. The API key may come in `X-API-Key`, `api-key`, or `Authorization: Bearer`.
Every thread belongs to the key that created it."""


def document() -> JSON:
    """The OpenAPI document (a fresh copy each call is not promised: treat it as read-only)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "lmstudio-proxy",
            "version": proxy.__version__,
            "description": INFO_DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "http://127.0.0.1:8000", "description": "The default address"}],
        "security": [{"XApiKey": []}, {"ApiKey": []}, {"Bearer": []}],
        "tags": [
            {"name": "responses", "description": "Create, stream and cancel responses"},
            {"name": "threads", "description": "Threads (v5 SDK threads.*)"},
            {"name": "messages", "description": "A thread's messages (v5 SDK messages.*)"},
            {"name": "models", "description": "LM Studio models"},
            {"name": "usage", "description": "Token usage (proxy addition)"},
            {"name": "meta", "description": "Health, this document, the playground"},
        ],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                name: {
                    "description": description,
                    "headers": REQUEST_ID_HEADER,
                    "content": {"application/json": {"schema": _ref("ErrorEnvelope")}},
                }
                for name, description in ERROR_RESPONSES.values()
            },
            "headers": {
                "X-Request-Id": {"description": "The request id (req_…), on every response", "schema": STR},
            },
            "securitySchemes": {
                "XApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "ApiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


@functools.cache
def _rendered() -> bytes:
    return json.dumps(document(), ensure_ascii=False).encode()


async def openapi_json(request: Request) -> Response:
    return Response(_rendered(), media_type="application/json")


routes: list[BaseRoute] = [Route("/openapi.json", openapi_json, methods=["GET"])]
