"""What a `predict` request asks for, parsed once: the history, the merged config and its settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.simulator import tools
from proxy.simulator.models import specifier_query

MAX_TOKENS_KEY = "llm.prediction.maxPredictedTokens"
STOP_STRINGS_KEY = "llm.prediction.stopStrings"
TOOLS_KEY = "llm.prediction.tools"
STRUCTURED_KEY = "llm.prediction.structured"
REASONING_PARSING_KEY = "llm.prediction.reasoning.parsing"
DRAFT_MODEL_KEY = "llm.prediction.speculativeDecoding.draftModel"


def history(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat as the record shows it: role, text, and the files / tool calls / tool results it carries."""
    history = params.get("history")
    messages = history.get("messages", []) if isinstance(history, dict) else []
    result = []
    for message in messages if isinstance(messages, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        parts = [p for p in content if isinstance(p, dict)] if isinstance(content, list) else []
        text = "".join(p["text"] for p in parts if isinstance(p.get("text"), str))
        entry: dict[str, Any] = {"role": str(message.get("role", "")), "text": text}
        files = [
            {k: p.get(k) for k in ("identifier", "name", "fileType", "sizeBytes")}
            for p in parts
            if p.get("type") == "file"
        ]
        if files:
            entry["files"] = files
        calls = [p.get("toolCallRequest") for p in parts if p.get("type") == "toolCallRequest"]
        if calls:
            entry["tool_calls"] = calls
        results = [str(p.get("content", "")) for p in parts if p.get("type") == "toolCallResult"]
        if results:
            entry["tool_results"] = results
        result.append(entry)
    return result


def config_fields(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Merge the prediction config stack's layers (later layers win) into one field list."""
    stack = params.get("predictionConfigStack")
    layers = stack.get("layers", []) if isinstance(stack, dict) else []
    merged: dict[str, Any] = {}
    for layer in layers if isinstance(layers, list) else []:
        config = layer.get("config", {}) if isinstance(layer, dict) else {}
        for field in config.get("fields", []) if isinstance(config, dict) else []:
            if isinstance(field, dict) and isinstance(field.get("key"), str):
                merged[field["key"]] = field.get("value")
    return [{"key": k, "value": v} for k, v in merged.items()]


def max_tokens(config: dict[str, Any]) -> int | None:
    """`maxPredictedTokens` when its checkbox is on."""
    value = config.get(MAX_TOKENS_KEY)
    if isinstance(value, dict) and value.get("checked") and isinstance(value.get("value"), int):
        return max(0, int(value["value"]))
    return None


def stop_strings(config: dict[str, Any]) -> list[str]:
    value = config.get(STOP_STRINGS_KEY)
    return [s for s in value if isinstance(s, str) and s] if isinstance(value, list) else []


@dataclass(frozen=True, slots=True)
class PredictRequest:
    """A predict channel's creation parameter, as the simulator uses and records it."""

    query: str  # the model the specifier names
    history: list[dict[str, Any]]
    fields: list[dict[str, Any]]  # the merged config, as the success packet echoes it
    config: dict[str, Any]  # the same, by key
    tools: list[dict[str, Any]]  # the function tools offered
    structured: dict[str, Any] | None  # json schema / gbnf setting (None: free text)
    images: list[dict[str, Any]]  # image files in the history
    preset: str | None
    draft_model: str | None

    @classmethod
    def parse(cls, params: Any) -> PredictRequest:
        params = params if isinstance(params, dict) else {}
        fields = config_fields(params)
        config = {f["key"]: f["value"] for f in fields}
        messages = history(params)
        structured = config.get(STRUCTURED_KEY)
        preset = params.get("fuzzyPresetIdentifier")
        draft = config.get(DRAFT_MODEL_KEY)
        return cls(
            query=specifier_query(params.get("modelSpecifier")),
            history=messages,
            fields=fields,
            config=config,
            tools=tools.offered(config.get(TOOLS_KEY)),
            structured=structured if isinstance(structured, dict) and structured.get("type") != "none" else None,
            images=[f for m in messages for f in m.get("files", []) if f.get("fileType") == "image"],
            preset=preset if isinstance(preset, str) else None,
            draft_model=draft if isinstance(draft, str) and draft else None,
        )

    @property
    def last_user_text(self) -> str:
        return next((m["text"] for m in reversed(self.history) if m["role"] == "user"), "")

    @property
    def reasoning_parsing(self) -> dict[str, Any]:
        value = self.config.get(REASONING_PARSING_KEY)
        return value if isinstance(value, dict) else {}
