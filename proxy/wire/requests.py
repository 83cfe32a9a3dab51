"""Request shapes: the bodies and query strings clients send, validated by pydantic.

Both spellings a real client sends are accepted: snake_case (v5) and camelCase (FR). Where
both are given, the first name listed in `_names(...)` wins (snake_case). Unknown fields are
ignored (forward compatibility). Models are strict: `"0.5"` is not a number, `1` not a boolean.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

Role = Literal["user", "assistant", "system", "tool"]
OutputMode = Literal["text", "plain", "structured", "blocks", "json", "json_schema"]
NOT_SUPPORTED = "not supported by lmstudio-proxy"
Order = Literal["asc", "desc"]
MAX_ID = 200


def _names(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def finite(value: Any) -> bool:
    """Whether a JSON value holds no NaN or infinity (`wire.decode` refuses those: not JSON)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


Metadata = Annotated[dict[str, Any], Field(description="Any JSON object (NaN and Infinity are refused)")]


class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


TEXT_BLOCKS = (None, "text", "input_text")
IMAGE_BLOCKS = ("image", "input_image", "image_url")
FILE_BLOCKS = ("file", "input_file")


class ContentBlock(_Shape):
    """A content block: text, an image (inline as a data URL or base64, or a stored file), or a
    stored file (`file_id`, from the files API). Images go to LM Studio for vision models."""

    type: str | None = Field(None, description="`text`/`input_text`, `image`/`input_image`, or `file`/`input_file`")
    text: str | None = None
    file_id: str | None = Field(None, max_length=MAX_ID, description="A file from the files API")
    image_url: str | dict[str, Any] | None = Field(
        None, description="An image as a `data:image/…;base64,…` URL (or `{url}`); other URLs are a 422"
    )
    data: str | None = Field(None, description="An image's bytes, base64")

    @model_validator(mode="after")
    def _text_block_has_text(self) -> ContentBlock:
        if self.type in (None, "text", "input_text") and self.text is None:
            raise PydanticCustomError("missing_text", "a text block needs a string `text`")
        return self


class LegacyText(_Shape):
    text: str


Content = str | list[str | ContentBlock] | dict[str, Any]


class FileReference(_Shape):
    file_id: str = Field(max_length=MAX_ID)


TOOL_NAME = r"^[A-Za-z0-9_-]{1,64}$"
MAX_TOOLS = 128


class FunctionTool(_Shape):
    """A function the client runs: the model may call it; the client sends the result back."""

    type: Literal["function"]
    name: str = Field(pattern=TOOL_NAME, description="1-64 letters, digits, _ or -")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments (an object)")
    strict: bool | None = Field(None, description="Accepted: LM Studio generates arguments for the schema anyway")


class McpTool(_Shape):
    """An MCP server the proxy connects to (streamable HTTP): it lists the server's tools,
    offers them to the model and runs the calls the model makes."""

    type: Literal["mcp"]
    server_label: str = Field(pattern=TOOL_NAME, description="Unique within the request; 1-64 letters, digits, _ or -")
    server_url: str | None = Field(None, max_length=2000, description="http:// or https:// (required)")
    configuration_id: str | None = Field(None, description=f"Saved MCP configurations: {NOT_SUPPORTED}")
    authorization: str | None = Field(
        None, max_length=8000, description="Sent as the Authorization header ('Bearer ' is added to a bare token)"
    )
    headers: dict[str, str | None] | None = Field(None, description="More HTTP headers for the server")
    allowed_tools: list[str] | None = Field(None, max_length=MAX_TOOLS, description="Offer only these tools")


class OtherTool(_Shape):
    """Any other kind of tool (personalConnector, …): refused (422)."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str


_TOOL_TAGS = {"function": "function-tool", "mcp": "mcp-tool"}


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return _TOOL_TAGS.get(kind, "other-tool") if isinstance(kind, str) else "other-tool"


# By `type`: a function tool with a bad name is an error of that tool, not "some other kind".
Tool = Annotated[
    Annotated[FunctionTool, Tag("function-tool")]
    | Annotated[McpTool, Tag("mcp-tool")]
    | Annotated[OtherTool, Tag("other-tool")],
    Discriminator(_tool_kind),
]


class InputMessage(_Shape):
    role: Role = "user"
    files: list[FileReference] | None = Field(None, description="Files for this message (not supported yet: 422)")
    tool_call_id: str | None = Field(
        None, max_length=MAX_ID, description="role 'tool': the id of the call this is the result of"
    )
    id: str | None = Field(None, description="Ignored: the id of a message the API returned")
    # left_to_right: for a string (nearly every request) pydantic stops at the first member; the
    # result and the errors are the same as smart mode's (tests/test_decode.py).
    content: Content | None = Field(
        None, union_mode="left_to_right", description="A string, or a list of text blocks (joined with newlines)"
    )
    texts: list[LegacyText] | None = Field(None, description="Legacy form of content, used when content is absent")

    def text(self) -> str:
        """The message's text: string content, or its text blocks joined with newlines."""
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            return "\n".join(t.text for t in self.texts or ())
        if isinstance(self.content, dict):  # a tool result's object: stored and sent as JSON text
            return json.dumps(self.content, ensure_ascii=False, separators=(",", ":"))
        return "\n".join(
            b if isinstance(b, str) else b.text or ""
            for b in self.content
            if isinstance(b, str) or b.type in (None, "text", "input_text")
        )


class Reasoning(_Shape):
    """Reasoning settings. LM Studio has no effort control: only the model's own level works."""

    effort: Literal["off", "low", "medium", "high", "maximum"] | None = Field(
        None, description="Only `medium` (the model's default) is honoured; other levels are a 422"
    )
    summary: Literal["off", "auto", "concise", "detailed"] | None = Field(
        None, description="`off` and `auto` (the raw reasoning) are honoured; concise and detailed are a 422"
    )


class CreateResponseRequest(_Shape):
    """`POST /v1/model/response`. Unknown fields are ignored; of two spellings, snake_case wins."""

    inputs: list[InputMessage] = Field(
        min_length=1,
        description="The conversation to add; must contain a user message (the last one is the query). "
        "System messages join the instructions.",
    )
    thread_id: str | None = Field(
        None, max_length=MAX_ID, validation_alias=_names("thread_id", "threadId"),
        description="Continue this thread; absent or null: create a thread",
    )  # fmt: skip
    model: str | None = Field(
        None, max_length=500,
        description="LM Studio model key or a configured alias; absent: the configured default, else the first "
        "loaded model",
    )  # fmt: skip
    stream: bool | None = Field(None, description="true: answer with text/event-stream")
    instructions: str | None = Field(None, description="System prompt")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1, validation_alias=_names("top_p", "topP"))
    max_tokens: int | None = Field(
        None, ge=1, le=1_000_000, validation_alias=_names("max_output_synapses", "max_tokens", "maxTokens"),
        description="Maximum tokens to generate",
    )  # fmt: skip
    output_mode: OutputMode | None = Field(None, validation_alias=_names("output_mode", "outputMode"))
    organization_id: str | None = Field(
        None, max_length=MAX_ID, validation_alias=_names("organization_id", "organizationId")
    )
    assistant_id: str | None = Field(None, max_length=MAX_ID, validation_alias=_names("assistant_id", "assistantId"))
    metadata: Metadata | None = Field(None, description="Stored on a thread this request creates")
    store: bool | None = Field(None, description="false: the created thread is not visible_in_ui")
    # Reset, edit and branch (v5): at most one; the last two need thread_id.
    previous_response_id: str | None = Field(
        None, max_length=MAX_ID, description="Reset: the thread's messages after this response are soft-deleted"
    )
    edit_message_id: str | None = Field(
        None, max_length=MAX_ID,
        description="Edit: this message and every later one are soft-deleted; the inputs replace them",
    )  # fmt: skip
    previous_message_id: str | None = Field(
        None, max_length=MAX_ID, description="Branch: every message after this one is soft-deleted"
    )
    json_schema: dict[str, Any] | None = Field(
        None, description="output_mode json_schema: the JSON Schema the answer must satisfy (or {name, schema})"
    )
    response_format: dict[str, Any] | None = Field(
        None, validation_alias=_names("response_format", "responseFormat"),
        description="FR's form of structured output: {type: json_object} or {type: json_schema, json_schema: "
        "{name, schema}}",
    )  # fmt: skip
    reasoning: Reasoning | None = None
    disable_rules: bool | None = Field(None, description="Honoured trivially: the proxy applies no rules")
    tools: list[Tool] | None = Field(
        None, max_length=MAX_TOOLS,
        description=f"Function tools (the client runs them) and MCP servers (the proxy runs their tools); "
        f"other kinds: {NOT_SUPPORTED}",
    )  # fmt: skip
    # Freddy features the proxy cannot honour: a value is refused (422), never silently dropped.
    include: list[str] | None = Field(None, description=f"{NOT_SUPPORTED} (422 unless empty)")
    system_tools: dict[str, Any] | None = Field(None, description=f"{NOT_SUPPORTED}: any tool not 'off' is a 422")
    vector_store_ids: list[str] | None = Field(None, description=f"File search / RAG: {NOT_SUPPORTED} (422)")
    space_id: str | None = Field(None, description=f"Spaces: {NOT_SUPPORTED} (422)")
    workflow_id: str | None = Field(None, description=f"Workflows: {NOT_SUPPORTED} (422)")


class ThreadUpdate(_Shape):
    """`PATCH /v1/threads/{thread_id}`: only the fields given change."""

    title: str | None = Field(None, max_length=1000)
    metadata: Metadata | None = None
    assistant_id: str | None = Field(None, max_length=1000)
    visible_in_ui: bool | None = None


class ThreadCreate(ThreadUpdate):
    """`POST /v1/threads` (the body may be empty)."""

    organization_id: str | None = Field(
        None, max_length=MAX_ID, validation_alias=_names("organization_id", "organizationId")
    )


class MessageUpdate(_Shape):
    """`PATCH …/messages/{message_id}`."""

    content: str | None = None
    metadata: Metadata | None = Field(None, description="Merged into the stored metadata (null removes a key)")


# -- query strings (lax: every value arrives as a string) ------------------------------------


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PageQuery(_Query):
    limit: int = Field(20, ge=1, le=100)
    order: Order = "asc"
    after: str | None = Field(None, description="Cursor: an id from this list")
    before: str | None = Field(None, description="Cursor: an id from this list")


class ThreadListQuery(PageQuery):
    order: Order = "desc"
    organization_id: str | None = None
    assistant_id: str | None = None
    visible_in_ui: bool | None = None
    is_pinned: bool | None = None
    include_total: bool | None = Field(None, description="Add `total` to the answer")


class MessageListQuery(PageQuery):
    output_mode: OutputMode | None = Field(None, description="Render assistant messages for this output mode")
    include_deleted: bool | None = Field(
        None, description="Also the messages an edit, branch or reset soft-deleted (they carry deleted_at)"
    )


class UsageQuery(_Query):
    thread_id: str | None = Field(None, description="Only this thread's records")
    limit: int = Field(50, ge=1, le=1000)


class DeleteThreadsQuery(_Query):
    organization_id: str | None = Field(None, description="Only this organization's threads")


NO_USER_MESSAGE = "must contain a user message (the last one is the query) or a tool result"


def _refused(field: str, what: str) -> dict[str, str]:
    return {"field": field, "message": f"{NOT_SUPPORTED}: {what}"}


def _mcp_errors(i: int, tool: McpTool, labels: set[str]) -> list[dict[str, str]]:
    errors = []
    if tool.server_label in labels:
        errors.append({"field": f"tools[{i}].server_label", "message": f"duplicate server_label '{tool.server_label}'"})
    labels.add(tool.server_label)
    if tool.configuration_id is not None:
        errors.append(_refused(f"tools[{i}].configuration_id", "saved MCP configurations (give server_url)"))
    elif tool.server_url is None:
        errors.append({"field": f"tools[{i}].server_url", "message": "required: the MCP server's http(s) URL"})
    elif tool.server_url.startswith("stdio:"):
        errors.append(_refused(f"tools[{i}].server_url", "stdio MCP servers (the proxy starts no programs)"))
    elif not tool.server_url.startswith(("http://", "https://")):
        errors.append({"field": f"tools[{i}].server_url", "message": "must be an http:// or https:// URL"})
    return errors


def request_errors(req: CreateResponseRequest) -> list[dict[str, str]]:
    """What the types cannot say: every message has content and one is the user's; reset, edit
    and branch exclude each other; and Freddy features the proxy cannot honour are refused.

    Plain Python after decoding (`wire.decode.decode_create`): as pydantic validators, these
    checks cost a fifth of the whole decode.
    """
    errors: list[dict[str, str]] = []
    has_user = False
    for i, m in enumerate(req.inputs):  # a plain loop: this runs on every request
        if type(m.content) is str and m.tool_call_id is None and m.files is None and m.role != "tool":
            has_user = has_user or m.role == "user"
            continue  # the common case: plain text, nothing more to check
        has_user = has_user or m.role == "user" or m.role == "tool"
        if m.content is None and m.texts is None:
            errors.append({"field": f"inputs[{i}]", "message": "must have `content` (or the legacy `texts`)"})
        elif m.role == "tool":
            if not m.tool_call_id:
                errors.append({"field": f"inputs[{i}].tool_call_id", "message": "is required for role 'tool'"})
        elif m.tool_call_id is not None:
            errors.append({"field": f"inputs[{i}].tool_call_id", "message": "only a 'tool' message has one"})
        elif isinstance(m.content, dict):
            errors.append({"field": f"inputs[{i}].content", "message": "an object is only a tool result's content"})
        elif isinstance(m.content, list):
            for j, block in enumerate(m.content):
                if not isinstance(block, ContentBlock) or block.type in TEXT_BLOCKS:
                    continue
                where = f"inputs[{i}].content[{j}]"
                if block.type in IMAGE_BLOCKS:
                    if block.file_id is None and block.image_url is None and block.data is None:
                        errors.append({"field": where, "message": "an image needs file_id, image_url or data"})
                elif block.type in FILE_BLOCKS:
                    if block.file_id is None:
                        errors.append({"field": where, "message": "a file block needs file_id"})
                else:
                    errors.append(_refused(where, f"content blocks of type '{block.type}'"))
    if not has_user:
        errors.append({"field": "inputs", "message": NO_USER_MESSAGE})
    if not _OPTIONAL_FEATURES.isdisjoint(req.model_fields_set):  # rare fields, checked only when given
        errors.extend(_feature_errors(req))
    return errors


_OPTIONAL_FEATURES = {
    "previous_response_id", "edit_message_id", "previous_message_id", "json_schema", "response_format",
    "reasoning", "tools", "include", "system_tools", "vector_store_ids", "space_id", "workflow_id", "output_mode",
}  # fmt: skip


def _feature_errors(req: CreateResponseRequest) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    resets = [f for f in ("previous_response_id", "edit_message_id", "previous_message_id") if getattr(req, f)]
    if len(resets) > 1:
        errors.append({"field": resets[1], "message": f"cannot be used with {resets[0]}: give at most one"})
    for name in ("edit_message_id", "previous_message_id"):
        if getattr(req, name) and not req.thread_id:
            errors.append({"field": name, "message": "requires thread_id"})
    if req.output_mode == "json_schema" and not req.json_schema:
        errors.append({"field": "json_schema", "message": "is required with output_mode json_schema"})
    if req.response_format is not None and req.response_format.get("type") not in ("json_object", "json_schema"):
        errors.append({"field": "response_format", "message": "type must be json_object or json_schema"})
    if req.reasoning is not None:
        if req.reasoning.effort not in (None, "medium"):
            errors.append(
                _refused("reasoning.effort", f"'{req.reasoning.effort}' (LM Studio has no effort control; "
                         "only medium, the model's own level, works)")
            )  # fmt: skip
        if req.reasoning.summary in ("concise", "detailed"):
            errors.append(_refused("reasoning.summary", f"'{req.reasoning.summary}' (only off or auto)"))
    names: set[str] = set()
    labels: set[str] = set()
    for i, tool in enumerate(req.tools or ()):
        if isinstance(tool, OtherTool):
            errors.append(_refused(f"tools[{i}].type", f"'{tool.type}' tools (function and mcp tools are)"))
        elif isinstance(tool, McpTool):
            errors.extend(_mcp_errors(i, tool, labels))
        elif tool.name in names:
            errors.append({"field": f"tools[{i}].name", "message": f"duplicate tool name '{tool.name}'"})
        else:
            names.add(tool.name)
            if tool.parameters is not None and tool.parameters.get("type", "object") != "object":
                errors.append({"field": f"tools[{i}].parameters", "message": "must be a JSON Schema of type object"})
    if req.include:
        errors.append(_refused("include", ", ".join(req.include)))
    for key, setting in (req.system_tools or {}).items():
        if isinstance(setting, dict) and setting.get("mode", "off") != "off":
            errors.append(_refused(f"system_tools.{key}", "system tools (web search, code interpreter, …)"))
    if req.vector_store_ids:
        errors.append(_refused("vector_store_ids", "vector stores (file search / RAG)"))
    if req.space_id:
        errors.append(_refused("space_id", "spaces"))
    if req.workflow_id:
        errors.append(_refused("workflow_id", "workflows"))
    return errors


def structured_schema(req: CreateResponseRequest) -> dict[str, Any] | None:
    """The JSON Schema the answer must follow (LM Studio's structured output), if any."""
    if req.output_mode == "json_schema" and req.json_schema:
        inner = req.json_schema.get("schema")
        return inner if isinstance(inner, dict) and "name" in req.json_schema else req.json_schema
    if req.output_mode == "json":
        return {"type": "object"}
    if req.response_format is not None:
        if req.response_format.get("type") == "json_schema":
            spec = req.response_format.get("json_schema") or {}
            schema = spec.get("schema") if isinstance(spec, dict) else None
            return schema if isinstance(schema, dict) else {"type": "object"}
        return {"type": "object"}
    return None
