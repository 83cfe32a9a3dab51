"""Shapes of the small v5 endpoints: the model list's query, health and auth mode, generateName."""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class ModelListQuery(_Query):
    """`GET /v1/models`: v5's flags. Local models have no price, none is deprecated, legacy or hidden."""

    ui_models_only: bool | None = Field(None, description="Every local model is visible in the UI")
    include_pricing: bool | None = Field(None, description="Add `pricing` (local: no cost)")
    include_details: bool | None = Field(None, description="Add description, architecture, size and format")
    include_capabilities: bool = Field(True, description="false: leave `capabilities` out")
    include_deprecated: bool | None = Field(None, description="No local model is deprecated")
    include_legacy: bool | None = Field(None, description="No local model is legacy")
    include_recent_usage: bool | None = Field(None, description="Add `last_used_at`: the caller's last use")


class HealthCheck(TypedDict):
    status: Literal["healthy"]


class ComponentStatus(TypedDict):
    name: str
    status: Literal["healthy", "unhealthy"]
    details: NotRequired[str | None]


class DetailedHealthCheck(TypedDict):
    """With auth.api_keys configured, a caller without a valid key gets no components (liveness only)."""

    status: Literal["healthy", "degraded"]
    components: list[ComponentStatus]


class AuthMode(TypedDict):
    authentication_mode: Annotated[
        Literal["api_key", "open"],
        Field(description="api_key: only the configured keys are accepted; open: any non-empty key"),
    ]
    dev_login_enabled: Literal[False]
    dev_prefill_email: None
    dev_prefill_password: None


class NameMessage(_Shape):
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=100_000)


class GenerateNameRequest(_Shape):
    """`POST /v1/threads/{thread_id}/generateName` (the body may be empty)."""

    messages: list[NameMessage] | None = Field(
        None, max_length=1000, description="Name the thread from these instead of its stored messages"
    )


class GenerateNameQuery(_Query):
    stream: bool | None = Field(None, description="true: answer with text/event-stream (deltas, then the name)")


class GeneratedName(TypedDict):
    """The name, stored as the thread's title (`threadId`/`name` as the hosted API documents them)."""

    success: Literal[True]
    thread_id: str
    threadId: str
    name: Annotated[str, Field(description="2 to 5 words, at most 50 characters")]
    title: Annotated[str, Field(description="Same as name: the thread's title now")]
    model: str
    message: str
