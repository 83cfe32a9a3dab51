"""How a stream ended: decide the outcome, commit it to the store, build the terminal event.

Runs on the event loop without awaiting, right after the pump's drain: that decision is the
linearisation point between a cancel and a normal end (see `proxy/streams.py`). Pure of the
stream itself: it gets what the pump knows (`Ended`), so it can be tested on a store alone.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, cast

from proxy.errors import InternalError, ProxyError, ShuttingDown, StorageUnavailable
from proxy.render import render
from proxy.spec import StreamSpec
from proxy.store import Store, Usage
from proxy.wire import bodies
from proxy.wire.bodies import CancelMode
from proxy.wire.events import ResponseCompletedEvent, ResponseErrorEvent, StreamEvent

log = logging.getLogger("proxy.streams")


@dataclass(frozen=True)
class Final:
    """What a finished stream produced: the non-streaming body is built from it."""

    status: str  # completed | cancelled | failed
    text: str
    usage: Usage
    rendered: str = ""
    blocks: list[bodies.ResponseBlock] | None = None
    message_id: str | None = None
    error: ProxyError | None = None
    tool_calls: list[bodies.ToolCall] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class Ended:
    """What the pump knows when a stream has drained: the input to the outcome."""

    spec: StreamSpec
    text: str
    reasoning: str
    stop_reason: str | None  # why a stop was requested: cancel | disconnect | shutdown
    cancel_mode: CancelMode | None
    duration: float
    usage: Usage
    error: ProxyError | None
    http_answer: bool = False  # the client gets an HTTP status, not a terminal SSE event
    tool_calls: list[bodies.ToolCall] = dataclasses.field(default_factory=list)  # of the last model round
    answered: frozenset[str] = frozenset()  # ids of those calls the proxy ran (the client runs the rest)


def record(store: Store, ended: Ended) -> tuple[str, Final, StreamEvent]:
    """Decide the outcome and commit it; return (outcome, what it produced, the terminal event).

    Runs without awaiting. If the store fails, the outcome is `failed` and the event says so:
    the client must still get a terminal event.
    """
    usage = ended.usage
    if ended.stop_reason is not None:
        if usage.stop_reason is None:
            usage = dataclasses.replace(usage, stop_reason="userStopped")
        ended = dataclasses.replace(ended, usage=usage)
        outcome = "cancelled"
    else:
        outcome = "failed" if ended.error is not None else "completed"
    try:
        if outcome == "completed":
            final, event = _record_completion(store, ended)
        elif outcome == "cancelled":
            final, event = _record_stop(store, ended)
        else:
            final, event = _record_failure(store, ended)
    except StorageUnavailable as exc:  # the store keeps the outcome and writes it once it can
        log.error("the outcome of %s is not saved yet: %s", ended.spec.response_id, exc.message)
        unsaved = StorageUnavailable(
            f"The answer could not be saved yet: {exc.message} The proxy saves it once the database can be "
            "written again."
        )
        return "failed", Final("failed", ended.text, usage, error=unsaved), error_event(ended.spec.thread_id, unsaved)
    except Exception:
        log.exception("recording the outcome of %s failed", ended.spec.response_id)
        error = InternalError("The proxy could not record the response.")
        return "failed", Final("failed", ended.text, usage, error=error), error_event(ended.spec.thread_id, error)
    return outcome, final, event


def _record_completion(store: Store, ended: Ended) -> tuple[Final, StreamEvent]:
    s, usage, text, duration = ended.spec, ended.usage, ended.text, ended.duration
    rendered, blocks = render(text, s.output_mode)
    metadata: dict[str, Any] = {"model": s.model, "stop_reason": usage.stop_reason}
    if ended.tool_calls:
        metadata["tool_calls"] = ended.tool_calls
    mid = store.finish_response(
        s.response_id, status="completed", usage=usage, duration=duration, text=text, metadata=metadata,
    )  # fmt: skip
    pending = [c for c in ended.tool_calls if c["id"] not in ended.answered]  # the client's to run
    final = Final(
        "completed", text, usage, rendered, cast(list[bodies.ResponseBlock] | None, blocks), mid,
        tool_calls=pending,
    )  # fmt: skip
    # Keys in this order, usage last (a dict keeps a key where it was first set): clients that
    # print the event read the counts last, and a reader of the last bytes finds them there.
    head = {
        "event": "response.completed", "status": "completed", "thread_id": s.thread_id,
        "response_id": s.response_id, "reasoning_content": ended.reasoning or None,
    }  # fmt: skip
    event = cast(ResponseCompletedEvent, head)
    if s.output_mode in ("structured", "blocks"):
        event["response_blocks"] = final.blocks
    else:
        event["response"] = rendered
    if pending:
        event["tool_calls"] = pending
        event["stop_reason"] = "tool_calls"
    event["usage"] = usage_json(usage)
    return final, event


def _record_failure(store: Store, ended: Ended) -> tuple[Final, StreamEvent]:
    s, usage, text, duration, error = ended.spec, ended.usage, ended.text, ended.duration, ended.error
    assert error is not None
    if ended.http_answer and not text and not ended.reasoning:
        # Nothing was generated and the client gets an HTTP error (which v5 retries):
        # keep nothing of it but the failed usage row, so a retry duplicates nothing.
        store.finish_response(
            s.response_id, status="failed", usage=usage, duration=duration, text=None,
            error=error.message, delete_thread_if_empty=s.thread_created,
        )  # fmt: skip
    else:
        metadata = {
            "failed": True, "error": {"code": error.code, "message": error.message},
            "partial_content_length": len(text),
        }  # fmt: skip
        store.finish_response(
            s.response_id, status="failed", usage=usage, duration=duration, text=text, metadata=metadata,
            error=error.message,
        )  # fmt: skip
    return Final("failed", text, usage, error=error), error_event(s.thread_id, error)


def error_event(thread_id: str, error: ProxyError) -> ResponseErrorEvent:
    return {"event": "response.error", "status": "failed", "thread_id": thread_id,
            "message": error.message, "code": error.code}  # fmt: skip


def _record_stop(store: Store, ended: Ended) -> tuple[Final, StreamEvent]:
    s, usage, text, duration = ended.spec, ended.usage, ended.text, ended.duration
    quick_edit = ended.stop_reason == "cancel" and ended.cancel_mode == "quick_edit"
    meta: dict[str, Any] | None = None
    if not quick_edit:
        meta = {"cancelled": True, "partial_content_length": len(text)}
        if ended.tool_calls:  # calls complete before the stop (a proxy-run one may have run)
            meta["tool_calls"] = ended.tool_calls
        if ended.stop_reason == "cancel":
            meta["cancel_mode"] = "keep_partial"
        elif ended.stop_reason == "disconnect":
            meta["cancel_reason"] = "client_disconnected"
        else:
            meta.update(cancel_reason="server_shutdown", interrupted=True)
    store.finish_response(
        s.response_id, status="cancelled", usage=usage, duration=duration,
        text=None if quick_edit else text,  # quick_edit: the messages go, as if never sent
        metadata=meta, cancel_mode=ended.cancel_mode or ended.stop_reason,
        delete_thread_if_empty=quick_edit and s.thread_created,
    )  # fmt: skip
    final = Final("cancelled", text, usage)
    if ended.stop_reason == "shutdown":
        return final, error_event(s.thread_id, ShuttingDown("The proxy is shutting down."))
    return final, {
        "event": "response.cancelled",
        "status": "cancelled",
        "thread_id": s.thread_id,
        "partial_content_length": len(text),
        # Only a cancel's event reaches a client; a disconnect's is written to nobody.
        "cancel_mode": cast(CancelMode, ended.cancel_mode or ended.stop_reason),
    }


def usage_json(usage: Usage) -> bodies.Usage:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "stop_reason": usage.stop_reason,
        "time_to_first_token_seconds": usage.time_to_first_token,
        "tokens_per_second": usage.tokens_per_second,
    }
