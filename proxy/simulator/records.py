"""Prediction records: what reached the simulator and what it did, for introspection by tests."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["running", "completed", "cancelled", "failed"]


@dataclass(slots=True)
class PredictionRecord:
    """One predict channel; mutated only under the simulator's lock."""

    id: int
    model: str
    history: list[dict[str, Any]]
    config: dict[str, Any]
    tools: list[str] = field(default_factory=list)  # names of the tools offered
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # the tool call requests generated
    structured: dict[str, Any] | None = None  # the structured output setting (json schema / gbnf)
    images: list[dict[str, Any]] = field(default_factory=list)  # image files in the history
    preset: str | None = None
    draft_model: str | None = None
    status: Status = "running"
    tokens_generated: int = 0
    tokens_at_cancel: int | None = None
    cancel_received_at: float | None = None
    stop_reason: str | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        after = 0 if self.tokens_at_cancel is None else self.tokens_generated - self.tokens_at_cancel
        return {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "tokens_generated": self.tokens_generated,
            "cancel_received_at": self.cancel_received_at,
            "tokens_after_cancel": after,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "history": [dict(m) for m in self.history],
            "config": dict(self.config),
            "tools": list(self.tools),
            "tool_calls": [dict(c) for c in self.tool_calls],
            "structured": self.structured,
            "images": [dict(i) for i in self.images],
            "preset": self.preset,
            "draft_model": self.draft_model,
        }
