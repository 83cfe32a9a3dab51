"""What an accepted request asks of LM Studio, and where its result goes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StreamSpec:
    """What an accepted request asks of LM Studio, and where its result goes."""

    owner: str
    thread_id: str
    response_id: str
    message_ids: list[str]
    thread_created: bool
    model: str
    messages: list[dict[str, Any]]  # in the SDK's chat-history form (`proxy/history.py`)
    prediction_config: dict[str, Any]
    output_mode: str
    trace_id: str
    streaming: bool = True
    accepted_at: float = field(default_factory=time.monotonic)
