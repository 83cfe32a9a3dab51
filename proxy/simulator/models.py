"""Simulated models: what one model is (`ModelSpec`), from `--model KEY[:OPTS]` or a model list file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

ModelType = Literal["llm", "embedding"]

_OPTIONS = frozenset({"loaded", "downloaded", "reasoning", "embedding", "vision", "tools"})


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One simulated model: its identity, what LM Studio reports about it, and how it behaves."""

    key: str
    loaded: bool = True
    reasoning: bool = False
    type: ModelType = "llm"
    publisher: str = "simulator"
    path: str | None = None  # default: PUBLISHER/KEY-GGUF/KEY.gguf
    display_name: str | None = None
    architecture: str | None = None
    quantization: str = "Q4_K_M"
    size_bytes: int | None = None
    params_string: str | None = None
    max_context_length: int = 8192
    context_length: int = 4096
    vision: bool = False
    trained_for_tool_use: bool = False
    embedding_length: int = 768  # the vector size of an embedding model

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("empty model key")
        if self.type not in ("llm", "embedding"):
            raise ValueError(f"model {self.key!r}: type must be 'llm' or 'embedding', got {self.type!r}")
        for name in ("max_context_length", "context_length", "embedding_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model {self.key!r}: {name} must be a positive integer")

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Parse `--model`: `KEY[:OPTS]`, OPTS a comma list of `downloaded`, `reasoning`, `embedding`,
        `vision`, `tools` (trained for tool use)."""
        key, sep, opts = text.rpartition(":")
        if not sep:
            key, opts = text, ""
        options = {o.strip() for o in opts.split(",") if o.strip()}
        unknown = options - _OPTIONS
        if unknown:
            raise ValueError(f"unknown model option(s) {sorted(unknown)} in {text!r}; use {sorted(_OPTIONS)}")
        if not key:
            raise ValueError(f"empty model key in {text!r}")
        if {"loaded", "downloaded"} <= options:
            raise ValueError(f"model {key!r} cannot be both loaded and downloaded")
        return cls(
            key=key,
            loaded="downloaded" not in options,
            reasoning="reasoning" in options,
            type="embedding" if "embedding" in options else "llm",
            vision="vision" in options,
            trained_for_tool_use="tools" in options,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ModelSpec:
        """One entry of a model list file; keys are the field names (snake_case or camelCase)."""
        names = {f.name for f in dataclasses.fields(cls)}
        aliases = {_camel(n): n for n in names} | {"modelKey": "key", "trainedForToolUse": "trained_for_tool_use"}
        values: dict[str, Any] = {}
        for raw, value in data.items():
            name = raw if raw in names else aliases.get(raw)
            if name is None:
                raise ValueError(f"unknown model field {raw!r}; known: {sorted(names)}")
            values[name] = value
        if "key" not in values:
            raise ValueError(f"a model entry needs a key: {dict(data)}")
        types = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        for name, value in values.items():
            expected = types[name]
            if value is None and "None" in expected:
                continue
            wanted = bool if "bool" in expected else int if "int" in expected else str
            # bool is an int in Python: check it apart so `size_bytes = true` is refused.
            if not isinstance(value, wanted) or (wanted is int and isinstance(value, bool)):
                raise ValueError(f"model {values.get('key')!r}: {name} must be of type {wanted.__name__}")
        return cls(**values)

    @property
    def model_path(self) -> str:
        if self.path:
            return self.path
        return f"{self.publisher}/{self.key}-GGUF/{self.key.rsplit('/', 1)[-1]}.gguf"

    @property
    def size(self) -> int:
        if self.size_bytes is not None:
            return self.size_bytes
        return 100_000_000 + int(hashlib.sha256(self.key.encode()).hexdigest()[:6], 16)

    def info(self) -> dict[str, Any]:
        """LM Studio's `LlmInfo` / `EmbeddingModelInfo` (plus the fields the JS SDK 2.x requires)."""
        info: dict[str, Any] = {
            "type": self.type,
            "modelKey": self.key,
            "format": "gguf",
            "displayName": self.display_name or _display_name(self.key),
            "path": self.model_path,
            "sizeBytes": self.size,
            "paramsString": self.params_string or ("7B" if self.reasoning else "1B"),
            "architecture": self.architecture or _default_architecture(self),
            "maxContextLength": self.max_context_length,
            # Fields of lmstudio-js 2.x's ModelInfo (the Python SDK ignores them).
            "publisher": self.publisher,
            "indexedModelIdentifier": self.model_path,
            "deviceIdentifier": None,
            "quantization": {"name": self.quantization, "bits": _quant_bits(self.quantization)},
        }
        if self.type == "llm":
            info["vision"] = self.vision
            info["trainedForToolUse"] = self.trained_for_tool_use
        else:
            info["embeddingLength"] = self.embedding_length
        return info


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _display_name(key: str) -> str:
    return " ".join(part.capitalize() for part in key.rsplit("/", 1)[-1].replace("_", "-").split("-"))


def _default_architecture(spec: ModelSpec) -> str:
    if spec.type == "embedding":
        return "nomic-bert"
    return "qwen3" if spec.reasoning else "llama"


def _quant_bits(name: str) -> int:
    digits = "".join(c for c in name.split("_")[0] if c.isdigit())
    return int(digits) if digits else 4


def load_model_file(path: str | Path) -> list[ModelSpec]:
    """Read a model list: TOML (`[[models]]` tables) or JSON (a list, or `{"models": [...]}`)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    entries = data.get("models") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: expected a list of model tables under `models`")
    try:
        return [ModelSpec.from_mapping(entry) for entry in entries]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("simulated-llm"),
    ModelSpec("simulated-reasoner", reasoning=True),
    ModelSpec("simulated-large", loaded=False),
)


def specifier_query(spec: Any) -> str:
    """The model a `modelSpecifier`/`specifier` names: an instance reference, or a query's identifier/path."""
    if not isinstance(spec, dict):
        return ""
    if spec.get("type") == "instanceReference":
        return str(spec.get("instanceReference", ""))
    query = spec.get("query")
    return str(query.get("identifier") or query.get("path") or "") if isinstance(query, dict) else ""
