"""What an accepted request asks of LM Studio, and where its result goes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.mcp_client import McpTool
    from proxy.store import NewResponse


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
    # Tools: the client's functions (by name), and the MCP tools the proxy runs (by name). A
    # call to any other name is answered by the proxy with an error, so the model can recover.
    function_tools: frozenset[str] = frozenset()
    mcp_tools: dict[str, McpTool] = field(default_factory=dict)
    # The request's rows, to store once LM Studio has been sent the prediction (the stream does
    # it: `ActiveStream.store_rows`); None when they are stored already.
    rows: NewResponse | None = None
    # Seconds the request waited on LM Studio before its prediction (the model listing, image
    # uploads): LM Studio's time, which X-Proxy-Overhead-Ms leaves out.
    lm_waited: float = 0.0
