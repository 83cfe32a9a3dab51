"""Run-time knobs: fault injection and timing settings, globally or per model."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Faults:
    """Failures to inject into predictions (and connections) of one model or of all models."""

    fail_after_tokens: int | None = None  # channelError after N tokens (SDK: LMStudioServerError)
    drop_after_tokens: int | None = None  # close the websocket after N tokens (LMStudioWebsocketError)
    stall: bool = False  # accept the predict, never progress (cancel still honoured)
    ignore_cancel: bool = False  # keep generating to the end despite a cancel
    refuse_connections: bool = False  # greeting and websockets rejected
    stall_in_tool_call: bool = False  # hold a tool call mid-arguments until the client cancels

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Faults:
        """Build from JSON-ish data, rejecting unknown keys and wrong types."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault(s): {sorted(unknown)}")
        for name in ("fail_after_tokens", "drop_after_tokens"):
            value = data.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer or null")
        for name in ("stall", "ignore_cancel", "refuse_connections", "stall_in_tool_call"):
            if not isinstance(data.get(name, False), bool):
                raise ValueError(f"{name} must be a boolean")
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Settings:
    """Timing of simulated work; 0 means as fast as possible."""

    tokens_per_second: float = 50.0
    load_seconds: float = 1.0
    prompt_seconds: float = 0.05

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{field.name} must be a non-negative number, got {value!r}")

    def updated(self, changes: Mapping[str, Any]) -> Settings:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ValueError(f"unknown setting(s): {sorted(unknown)}")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
