"""What a simulated model answers a request: a refusal before generating, else its tokens.

The tokens are text (seeded by the prompt), reasoning between tags, a tool call's preamble (the
call itself is sent by the prediction channel after them), a text answer quoting tool results,
or structured JSON generated from the schema or grammar.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from proxy.simulator import gbnf, protocol, schemagen, textgen, tools
from proxy.simulator.catalogue import Catalogue
from proxy.simulator.models import ModelSpec
from proxy.simulator.request import PredictRequest

Token = tuple[str, str]  # (text, reasoningType)


def _words(text: str) -> Iterator[Token]:
    """Plain answer tokens: each word with its leading space."""
    for word in re.findall(r"\s*\S+\s*", text):
        yield word, "none"


def _chunks(text: str, size: int = 4) -> Iterator[Token]:
    for i in range(0, len(text), size):
        yield text[i : i + size], "none"


def refusal(request: PredictRequest, spec: ModelSpec, catalogue: Catalogue) -> dict[str, Any] | None:
    """The error LM Studio answers a prediction with before generating anything, if any."""
    if request.preset is not None:
        # The simulator has no presets: every preset is unknown (LM Studio's error and code).
        return protocol.server_error(
            f'Cannot find preset "{request.preset}"',
            "generic.presetNotFound",
            specifiedFuzzyPresetIdentifier=request.preset,
        )
    if request.draft_model is not None:
        draft = catalogue.resolve(request.draft_model, "llm")
        if draft is None:
            return protocol.server_error(f'Draft model "{request.draft_model}" not found')
        if draft.key == spec.key:
            return protocol.server_error("The draft model must be different from the main model")
    if request.images and not spec.vision:
        return protocol.server_error(f'Model "{spec.key}" does not support images: it is not a vision model')
    structured = request.structured
    if structured is not None:
        try:
            if structured.get("type") == "json":
                schemagen.validate(structured.get("jsonSchema"))
            elif structured.get("type") == "gbnf":
                gbnf.parse(str(structured.get("gbnfGrammar", "")))
            else:
                raise schemagen.SchemaError(f"unknown structured output type {structured.get('type')!r}")
        except (schemagen.SchemaError, gbnf.GrammarError) as exc:
            return protocol.server_error(f"Invalid structured output configuration: {exc}")
    return None


@dataclass(frozen=True, slots=True)
class Answer:
    """The tokens to stream, and the tool call to send after them (if any)."""

    tokens: Iterator[Token]
    tool_call: tools.ToolCall | None = None


def plan(request: PredictRequest, spec: ModelSpec, seed: int) -> Answer:
    """What `spec` answers `request`; `seed` makes tool call ids unique per prediction."""
    history = request.history
    last_user = request.last_user_text
    if history and history[-1].get("tool_results"):
        # The tool results are back: the next call of a `[tool=A>B]` chain, or a text answer
        # quoting them.
        rounds = _rounds_since_user(history)
        if rounds < len(tools.chain(last_user)):
            call = tools.plan(request.tools, last_user, seed, rounds)
            if call is not None:
                return Answer(_words(tools.preamble(call)), call)
        calls: list[Any] = next((m.get("tool_calls", []) for m in reversed(history) if m["role"] == "assistant"), [])
        names = [str(c.get("name")) for c in calls if isinstance(c, dict)]
        return Answer(_words(tools.answer_from_results(history[-1]["tool_results"], names)))
    call = tools.plan(request.tools, last_user, seed)
    if call is not None:
        return Answer(_words(tools.preamble(call)), call)
    if request.structured is not None:
        return Answer(_chunks(_structured_text(request.structured, last_user)))
    return Answer(_text(request, spec, last_user))


def _rounds_since_user(history: list[dict[str, Any]]) -> int:
    """How many tool-calling assistant turns came after the last user message."""
    count = 0
    for message in reversed(history):
        if message["role"] == "user":
            break
        if message["role"] == "assistant" and message.get("tool_calls"):
            count += 1
    return count


def _structured_text(structured: dict[str, Any], prompt: str) -> str:
    if structured.get("type") == "gbnf":
        return gbnf.generate(str(structured.get("gbnfGrammar", "")))
    return json.dumps(schemagen.generate(structured.get("jsonSchema"), prompt))


def _text(request: PredictRequest, spec: ModelSpec, last_user: str) -> Iterator[Token]:
    requested = textgen.requested_length(last_user)
    length = textgen.DEFAULT_ANSWER_TOKENS if requested is None else requested
    if spec.reasoning:
        parsing = request.reasoning_parsing
        start = str(parsing.get("startString") or "<think>")
        end = str(parsing.get("endString") or "</think>")
        parsed = parsing.get("enabled", True) is not False  # unparsed: the tags are plain content
        yield start, "reasoningStartTag" if parsed else "none"
        for text in textgen.reasoning_tokens(last_user):
            yield text, "reasoning" if parsed else "none"
        yield end, "reasoningEndTag" if parsed else "none"
        yield "\n\n", "none"
    if request.images:
        yield from _words(f"The image shows {len(request.images)} picture(s). ")
    if requested is None and textgen.is_greeting(last_user):  # `[tokens=N]` keeps its exact length
        yield from _words("Hello! How can I help you today?\n\n")
    for text in islice(textgen.answer_tokens(last_user), length):
        yield text, "none"
