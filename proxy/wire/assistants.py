"""Assistant shapes (v5's `assistants` group): requests as pydantic models, answers as TypedDicts.

What one machine can honour is stored: name, description, instructions, the model, the
sampling settings a response request takes (temperature, top_p, max tokens, output mode),
tool configurations, metadata, is_default and is_active. Every other field v5 sends is
declared here only to be refused (`REFUSED`, a 422) unless it is null.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

OutputMode = Literal["text", "plain", "structured", "blocks"]

#: v5 fields with no local meaning (access control, hosted tools and stores, workflows, icons…).
REFUSED = (
    "avatar_id", "icon_id", "icon_type", "icon_data", "allowed_model_providers", "instructions_thread_id",
    "system_message", "context_strategy", "context_window", "max_tool_calls", "parallel_tool_calls",
    "service_tier", "store_responses", "frequency_penalty", "presence_penalty", "logit_bias", "top_logprobs",
    "response_format", "seed", "stop_sequences", "access_mode", "access_departments", "access_users",
    "editable_by_users", "visible_in_chat_to_users", "editable_by_roles", "visible_to_roles", "api_enabled",
    "public_enabled", "streaming", "memory_enabled", "moderation_enabled", "safety_level", "truncation",
    "preset_prompts", "text_config", "reasoning", "vector_store_ids", "json_schemas", "rule_ids",
)  # fmt: skip

_REFUSED_DOC = "Not supported by lmstudio-proxy: refused (422) unless null"


class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class SystemTool(_Shape):
    mode: str | None = None
    sources: bool | None = None
    outputs: bool | None = None
    results: bool | None = None
    image_url: bool | None = None
    provider: str | None = None


class ToolConfigurations(_Shape):
    """Stored as given and returned; whoever applies the assistant decides what can run locally."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="forbid")
    system_tools: dict[str, SystemTool | None] | None = None
    mcp_tools: list[dict[str, Any]] | None = Field(None, max_length=100)
    streamline_tools: list[str] | None = Field(None, max_length=100)


class _Refused(_Shape):
    avatar_id: Any = Field(None, description=_REFUSED_DOC)
    icon_id: Any = Field(None, description=_REFUSED_DOC)
    icon_type: Any = Field(None, description=_REFUSED_DOC)
    icon_data: Any = Field(None, description=_REFUSED_DOC)
    allowed_model_providers: Any = Field(None, description=_REFUSED_DOC)
    instructions_thread_id: Any = Field(None, description=_REFUSED_DOC)
    system_message: Any = Field(None, description=_REFUSED_DOC)
    context_strategy: Any = Field(None, description=_REFUSED_DOC)
    context_window: Any = Field(None, description=_REFUSED_DOC)
    max_tool_calls: Any = Field(None, description=_REFUSED_DOC)
    parallel_tool_calls: Any = Field(None, description=_REFUSED_DOC)
    service_tier: Any = Field(None, description=_REFUSED_DOC)
    store_responses: Any = Field(None, description=_REFUSED_DOC)
    frequency_penalty: Any = Field(None, description=_REFUSED_DOC)
    presence_penalty: Any = Field(None, description=_REFUSED_DOC)
    logit_bias: Any = Field(None, description=_REFUSED_DOC)
    top_logprobs: Any = Field(None, description=_REFUSED_DOC)
    response_format: Any = Field(None, description=_REFUSED_DOC)
    seed: Any = Field(None, description=_REFUSED_DOC)
    stop_sequences: Any = Field(None, description=_REFUSED_DOC)
    access_mode: Any = Field(None, description=_REFUSED_DOC)
    access_departments: Any = Field(None, description=_REFUSED_DOC)
    access_users: Any = Field(None, description=_REFUSED_DOC)
    editable_by_users: Any = Field(None, description=_REFUSED_DOC)
    visible_in_chat_to_users: Any = Field(None, description=_REFUSED_DOC)
    editable_by_roles: Any = Field(None, description=_REFUSED_DOC)
    visible_to_roles: Any = Field(None, description=_REFUSED_DOC)
    api_enabled: Any = Field(None, description=_REFUSED_DOC)
    public_enabled: Any = Field(None, description=_REFUSED_DOC)
    streaming: Any = Field(None, description=_REFUSED_DOC)
    memory_enabled: Any = Field(None, description=_REFUSED_DOC)
    moderation_enabled: Any = Field(None, description=_REFUSED_DOC)
    safety_level: Any = Field(None, description=_REFUSED_DOC)
    truncation: Any = Field(None, description=_REFUSED_DOC)
    preset_prompts: Any = Field(None, description=_REFUSED_DOC)
    text_config: Any = Field(None, description=_REFUSED_DOC)
    reasoning: Any = Field(None, description=_REFUSED_DOC)
    vector_store_ids: Any = Field(None, description=_REFUSED_DOC)
    rule_ids: Any = Field(None, description=_REFUSED_DOC)

    def refused(self) -> list[str]:
        """The refused fields the client set to something other than null."""
        return [name for name in REFUSED if name in self.model_fields_set and getattr(self, name, None) is not None]


class _Honoured(_Refused):
    description: str | None = Field(None, max_length=10_000)
    instructions: str | None = Field(None, max_length=1_000_000, description="The system prompt")
    default_model_key: str | None = Field(
        None, max_length=500, description="LM Studio model key or alias; null: the proxy's default model"
    )
    temperature: float | None = Field(None, ge=0, le=2, description="null: 0.7")
    top_p: float | None = Field(None, ge=0, le=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=1_000_000, description="A response's max_tokens")
    output_mode: OutputMode | None = None
    tool_configurations: ToolConfigurations | None = None
    is_default: bool | None = None
    is_active: bool | None = Field(None, description="false: listed only with include_inactive")


class AssistantCreate(_Honoured):
    """`POST /v1/assistants`."""

    name: str = Field(min_length=1, max_length=256)
    organization_id: str = Field(min_length=1, max_length=200)
    metadata: dict[str, Any] | None = None
    json_schemas: Any = Field(None, description=_REFUSED_DOC)

    def refused(self) -> list[str]:
        return super().refused() + (["json_schemas"] if self.json_schemas is not None else [])


class AssistantUpdate(_Honoured):
    """`PUT /v1/assistants/{assistant_id}`: only the fields given change (null clears one)."""

    name: str | None = Field(None, min_length=1, max_length=256, description="Cannot be null")
    assistant_metadata: dict[str, Any] | None = Field(None, description="Replaces the metadata")


class AssistantListQuery(BaseModel):
    """`GET /v1/assistants`: the caller's assistants. Every local assistant is private to its key,
    API-enabled and visible in chat, uses no vector store: the filters on those match on that."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    organization_id: str | None = Field(None, description="Only this organization's assistants")
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=1_000_000_000)
    search: str | None = Field(None, max_length=500, description="In the name or description")
    access_mode: str | None = Field(None, description="Every local assistant is `private`")
    vector_store_id: str | None = Field(None, description="No local assistant uses a vector store")
    visible_in_chat: bool | None = None
    for_chat: bool | None = Field(None, description="Deprecated spelling of visible_in_chat")
    include_inactive: bool = False
    sort_by: Literal["created_at", "updated_at", "name"] = "created_at"
    sort_order: Literal["asc", "desc"] = "desc"
    fields: Literal["summary", "standard", "full"] = "full"


# -- answers ----------------------------------------------------------------------------------


class AssistantSummary(TypedDict):
    id: Annotated[str, Field(description="asst_…")]
    object: Literal["assistant"]
    name: str
    description: str | None
    is_default: bool
    created_at: Annotated[int, Field(description="Epoch seconds")]
    updated_at: Annotated[int, Field(description="Epoch seconds")]
    access_mode: Literal["private"]
    api_enabled: Literal[True]
    is_active: bool
    temperature: float
    user_access_level: Literal["owner"]
    workflow_based: Literal[False]


class AssistantStandard(AssistantSummary):
    default_model_key: Annotated[str, Field(description="Empty: the proxy's default model")]
    context_strategy: Literal["full"]


class Assistant(AssistantSummary):
    """v5's `AssistantResponse` (the fields the proxy keeps; the others are absent)."""

    organization_id: str
    created_by: Annotated[str, Field(description="usr_ and the start of the owner hash")]
    deleted_at: None
    default_model_key: Annotated[str | None, Field(description="null: the proxy's default model")]
    context_strategy: Literal["full"]
    instructions: str | None
    top_p: float | None
    max_completion_tokens: int | None
    output_mode: str | None
    tool_configurations: dict[str, Any] | None
    metadata: dict[str, Any]


class Pagination(TypedDict):
    total: int
    limit: int
    offset: int
    has_more: bool


class FiltersApplied(TypedDict):
    search: str | None
    access_mode: str | None
    include_inactive: bool
    sort_by: str
    sort_order: str


class UserContext(TypedDict):
    user_id: str
    organization_count: int


class AssistantList(TypedDict):
    assistants: list[Assistant | AssistantStandard | AssistantSummary]
    total: int
    organization_id: str | None
    pagination: Pagination
    filters_applied: FiltersApplied
    user_context: UserContext


class AssistantDeleted(TypedDict):
    id: str
    object: Literal["assistant.deleted"]
    deleted: Literal[True]
    message: NotRequired[str]
