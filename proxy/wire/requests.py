"""Request shapes: the bodies and query strings clients send, validated by pydantic.

Both spellings a real client sends are accepted: snake_case (v5) and camelCase (FR). Where
both are given, the first name listed in `_names(...)` wins (snake_case). Unknown fields are
ignored (forward compatibility). Models are strict: `"0.5"` is not a number, `1` not a boolean.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic_core import PydanticCustomError

Role = Literal["user", "assistant", "system"]
OutputMode = Literal["text", "plain", "structured", "blocks"]
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


class ContentBlock(_Shape):
    """A content block. Text blocks are used; blocks of other types (image, file) are ignored."""

    type: str | None = Field(None, description="`text` or `input_text`")
    text: str | None = None

    @model_validator(mode="after")
    def _text_block_has_text(self) -> ContentBlock:
        if self.type in (None, "text", "input_text") and self.text is None:
            raise PydanticCustomError("missing_text", "a text block needs a string `text`")
        return self


class LegacyText(_Shape):
    text: str


Content = str | list[str | ContentBlock]


class InputMessage(_Shape):
    role: Role = "user"
    content: Content | None = Field(None, description="A string, or a list of text blocks (joined with newlines)")
    texts: list[LegacyText] | None = Field(None, description="Legacy form of content, used when content is absent")

    def text(self) -> str:
        """The message's text: string content, or its text blocks joined with newlines."""
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            return "\n".join(t.text for t in self.texts or ())
        return "\n".join(
            b if isinstance(b, str) else b.text or ""
            for b in self.content
            if isinstance(b, str) or b.type in (None, "text", "input_text")
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


class UsageQuery(_Query):
    thread_id: str | None = Field(None, description="Only this thread's records")
    limit: int = Field(50, ge=1, le=1000)


class DeleteThreadsQuery(_Query):
    organization_id: str | None = Field(None, description="Only this organization's threads")


NO_USER_MESSAGE = "must contain at least one user message (the last one is the query)"


def input_errors(req: CreateResponseRequest) -> list[dict[str, str]]:
    """What the types cannot say about `inputs`: each message has content, one is the user's.

    Plain Python after decoding (`wire.decode.decode_create`): as a pydantic validator, this
    one pass cost a fifth of the whole decode.
    """
    errors: list[dict[str, str]] = []
    has_user = False
    for i, m in enumerate(req.inputs):  # a plain loop: this runs on every request
        has_user = has_user or m.role == "user"
        if m.content is None and m.texts is None:
            errors.append({"field": f"inputs[{i}]", "message": "must have `content` (or the legacy `texts`)"})
    if not has_user:
        errors.append({"field": "inputs", "message": NO_USER_MESSAGE})
    return errors
