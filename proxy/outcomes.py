"""How a stream ended: decide the outcome, commit it to the store, then queue the terminal event.

Runs on the event loop without awaiting, right after the pump's drain: that decision is the
linearisation point between a cancel and a normal end (see `proxy/streams.py`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from proxy.errors import InternalError, ProxyError, ShuttingDown
from proxy.render import render
from proxy.store import Store, Usage
from proxy.wire import bodies
from proxy.wire.bodies import CancelMode
from proxy.wire.events import ResponseCompletedEvent, ResponseErrorEvent, StreamEvent

if TYPE_CHECKING:
    from proxy.streams import ActiveStream

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


def finish(stream: ActiveStream, store: Store, usage: Usage, error: ProxyError | None) -> None:
    """Decide the outcome, commit it, then queue the terminal event. Runs without awaiting."""
    s = stream.spec
    text = "".join(stream.parts)
    duration = stream.elapsed()
    event: StreamEvent
    if stream.stop_reason is not None:
        stream.outcome = "cancelled"
        if usage.stop_reason is None:
            usage = dataclasses.replace(usage, stop_reason="userStopped")
    elif error is not None:
        stream.outcome = "failed"
    else:
        stream.outcome = "completed"
    try:
        if stream.outcome == "completed":
            event = _record_completion(stream, store, usage, duration, text)
        elif stream.outcome == "cancelled":
            event = _record_stop(stream, store, usage, duration, text)
        else:
            assert error is not None
            event = _record_failure(stream, store, usage, duration, text, error)
    except Exception:  # the store failed: the client must still get a terminal event
        log.exception("recording the outcome of %s failed", s.response_id)
        stream.outcome = "failed"
        error = InternalError("The proxy could not record the response.")
        stream.final = Final("failed", text, usage, error=error)
        event = error_event(stream.thread_id, error)
    stream.registry.finished(stream, usage)
    stream.outbox.push(event)
    stream.outbox.close()
    stream.finished.set()
    log.info(
        "stream end thread=%s response=%s model=%s outcome=%s stop_reason=%s tokens=%d",
        s.thread_id, s.response_id, s.model, stream.outcome, usage.stop_reason, usage.output_tokens,
    )  # fmt: skip


def _record_completion(stream: ActiveStream, store: Store, usage: Usage, duration: float, text: str) -> StreamEvent:
    s = stream.spec
    rendered, blocks = render(text, s.output_mode)
    mid = store.finish_response(
        s.response_id, status="completed", usage=usage, duration=duration, text=text,
        metadata={"model": s.model, "stop_reason": usage.stop_reason},
    )  # fmt: skip
    stream.final = Final("completed", text, usage, rendered, cast(list[bodies.ResponseBlock] | None, blocks), mid)
    event: ResponseCompletedEvent = {
        "event": "response.completed", "status": "completed", "thread_id": s.thread_id,
        "response_id": s.response_id, "reasoning_content": None, "usage": usage_json(usage),
    }  # fmt: skip
    if s.output_mode in ("structured", "blocks"):
        event["response_blocks"] = stream.final.blocks
    else:
        event["response"] = rendered
    event["reasoning_content"] = "".join(stream.reasoning) or None
    event["usage"] = usage_json(usage)  # last, as before: clients that print the event read it last
    return event


def _record_failure(
    stream: ActiveStream, store: Store, usage: Usage, duration: float, text: str, error: ProxyError
) -> StreamEvent:
    s = stream.spec
    if not s.streaming and not stream.parts and not stream.reasoning:
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
    stream.final = Final("failed", text, usage, error=error)
    return error_event(s.thread_id, error)


def error_event(thread_id: str, error: ProxyError) -> ResponseErrorEvent:
    return {"event": "response.error", "status": "failed", "thread_id": thread_id,
            "message": error.message, "code": error.code}  # fmt: skip


def _record_stop(stream: ActiveStream, store: Store, usage: Usage, duration: float, text: str) -> StreamEvent:
    s = stream.spec
    quick_edit = stream.stop_reason == "cancel" and stream.cancel_mode == "quick_edit"
    meta: dict[str, Any] | None = None
    if not quick_edit:
        meta = {"cancelled": True, "partial_content_length": len(text)}
        if stream.stop_reason == "cancel":
            meta["cancel_mode"] = "keep_partial"
        elif stream.stop_reason == "disconnect":
            meta["cancel_reason"] = "client_disconnected"
        else:
            meta.update(cancel_reason="server_shutdown", interrupted=True)
    store.finish_response(
        s.response_id, status="cancelled", usage=usage, duration=duration,
        text=None if quick_edit else text,  # quick_edit: the messages go, as if never sent
        metadata=meta, cancel_mode=stream.cancel_mode or stream.stop_reason,
        delete_thread_if_empty=quick_edit and s.thread_created,
    )  # fmt: skip
    stream.final = Final("cancelled", text, usage)
    if stream.stop_reason == "shutdown":
        return error_event(s.thread_id, ShuttingDown("The proxy is shutting down."))
    return {
        "event": "response.cancelled",
        "status": "cancelled",
        "thread_id": s.thread_id,
        "partial_content_length": len(text),
        # Only a cancel's event reaches a client; a disconnect's is written to nobody.
        "cancel_mode": cast(CancelMode, stream.cancel_mode or stream.stop_reason),
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
