"""Tool use: which tool a simulated model calls, with which arguments, and its answer afterwards.

Deterministic and scriptable. In the last user message:
- `[tool=NAME]` calls NAME; `[tool=none]` answers in text; `[tool=fail]` produces a tool call
  that fails to generate (`toolCallGenerationFailed`, as when a model emits malformed JSON).
- `[tool=!NAME]` calls NAME even if it was not offered (a model that invents a tool).
- `[tool=A>B>C]` calls A, then (once A's result is back) B, then C: one call per round, for
  multi-round tool use; after the last result the model answers in text.
- Otherwise the model calls the tool the message names (by its function name), or the only tool
  offered. Arguments are generated to fit the tool's JSON schema, numbers taken from the message.
Once the history ends with tool results, the model answers in text, quoting the results.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from proxy.simulator import schemagen

_HOOK = re.compile(r"\[tool=([^\]\s]+)\]")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One planned call: `failed` ones end with toolCallGenerationFailed instead of an end packet."""

    name: str
    arguments: dict[str, Any]
    call_id: str
    failed: bool = False

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))

    def request(self) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "id": self.call_id, "arguments": self.arguments}


def offered(config_value: Any) -> list[dict[str, Any]]:
    """The function tools in an `llm.prediction.tools` value (`{type: toolArray, tools: [...]}`)."""
    if not isinstance(config_value, dict) or config_value.get("type") != "toolArray":
        return []
    tools = config_value.get("tools") or []
    result = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            result.append(function)
    return result


def chain(user_text: str) -> list[str]:
    """The names of a `[tool=A>B]` hook (one name for `[tool=A]`), or [] without a hook."""
    hook = _HOOK.search(user_text)
    return hook.group(1).split(">") if hook is not None else []


def plan(tools: list[dict[str, Any]], user_text: str, seed: int, round_index: int = 0) -> ToolCall | None:
    """The tool call a model makes for `user_text` in round `round_index` (0: before any tool
    result is back), or None to answer in text."""
    if not tools:
        return None
    by_name = {t["name"]: t for t in tools}
    hook = _HOOK.search(user_text)
    call_id = f"{seed % 1_000_000_000:09d}"
    if hook is not None:
        names = hook.group(1).split(">")
        if round_index >= len(names):
            return None
        name = names[round_index]
        if name.startswith("!"):  # a model that calls a tool nobody offered
            return ToolCall(name[1:], {}, call_id)
        if name == "none":
            return None
        if name == "fail":
            first = tools[0]["name"]
            return ToolCall(first, {}, call_id, failed=True)
        chosen = by_name.get(name)
        if chosen is None:
            return None
    else:
        named = [t for t in tools if re.search(rf"\b{re.escape(t['name'])}\b", user_text)]
        if named:
            chosen = named[0]
        elif len(tools) == 1:
            chosen = tools[0]
        else:
            return None
    prompt = _HOOK.sub("", user_text)
    try:
        arguments = schemagen.generate(chosen.get("parameters") or {"type": "object", "properties": {}}, prompt)
    except schemagen.SchemaError:
        return ToolCall(chosen["name"], {}, call_id, failed=True)
    return ToolCall(chosen["name"], arguments if isinstance(arguments, dict) else {}, call_id)


def preamble(call: ToolCall) -> str:
    """The text a model says before calling (LM Studio streams it as ordinary content)."""
    return f"Let me use the {call.name} tool."


def answer_from_results(results: list[str], names: list[str]) -> str:
    """The text answer once tool results are back in the history (naming the tools that were called)."""
    joined = "; ".join(r.strip() for r in results if r.strip()) or "nothing"
    called = " and ".join(dict.fromkeys(names)) or "the tool"
    return f"I called {called}, which returned {joined}. So the answer is {joined}."
