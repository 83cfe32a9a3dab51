"""The simulated model catalogue: which models exist, which are loaded, and their info dicts."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_OPTIONS = frozenset({"loaded", "downloaded", "reasoning"})


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One simulated model: its key, whether it starts loaded, whether it reasons."""

    key: str
    loaded: bool = True
    reasoning: bool = False

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """Parse `--model`: `KEY`, `KEY:downloaded`, `KEY:reasoning`, `KEY:downloaded,reasoning`."""
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
        return cls(key=key, loaded="downloaded" not in options, reasoning="reasoning" in options)


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("simulated-llm"),
    ModelSpec("simulated-reasoner", reasoning=True),
    ModelSpec("simulated-large", loaded=False),
)


def _display_name(key: str) -> str:
    return " ".join(part.capitalize() for part in key.rsplit("/", 1)[-1].replace("_", "-").split("-"))


class Catalogue:
    """The models the simulator knows and their load state (mutated only under the owner's lock)."""

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._specs: dict[str, ModelSpec] = {}
        self._loaded: dict[str, str] = {}  # model key -> instance reference
        self._refs: Iterator[int] = itertools.count(1)
        for spec in specs:
            if spec.key in self._specs:
                raise ValueError(f"duplicate model key {spec.key!r}")
            self._specs[spec.key] = spec
            if spec.loaded:
                self.mark_loaded(spec.key)
        if not self._specs:
            raise ValueError("the simulator needs at least one model")

    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    def resolve(self, query: str | None) -> ModelSpec | None:
        """Find a model by key, path, instance reference, or (like LM Studio) a case-insensitive match."""
        if not query:
            return next((self._specs[k] for k in self._loaded), None)
        if query in self._specs:
            return self._specs[query]
        lowered = query.lower()
        for key, spec in self._specs.items():
            if lowered in (key.lower(), self.path(key).lower(), self._loaded.get(key)):
                return spec
        return None

    def is_loaded(self, key: str) -> bool:
        return key in self._loaded

    def mark_loaded(self, key: str) -> None:
        self._loaded.setdefault(key, f"sim-instance-ref-{next(self._refs)}")

    def unload(self, key: str) -> None:
        self._loaded.pop(key, None)

    @staticmethod
    def path(key: str) -> str:
        return f"simulator/{key}-GGUF/{key.rsplit('/', 1)[-1]}.gguf"

    def model_info(self, key: str) -> dict[str, Any]:
        """The `LlmInfo` dict LM Studio sends for a downloaded model."""
        spec = self._specs[key]
        size = 100_000_000 + int(hashlib.sha256(key.encode()).hexdigest()[:6], 16)
        return {
            "type": "llm",
            "modelKey": key,
            "format": "gguf",
            "displayName": _display_name(key),
            "path": self.path(key),
            "sizeBytes": size,
            "paramsString": "7B" if spec.reasoning else "1B",
            "architecture": "qwen3" if spec.reasoning else "llama",
            "vision": False,
            "trainedForToolUse": False,
            "maxContextLength": 8192,
        }

    def instance_info(self, key: str) -> dict[str, Any]:
        """The `LlmInstanceInfo` dict for a loaded model (the identifier is the model key)."""
        return {
            **self.model_info(key),
            "identifier": key,
            "instanceReference": self._loaded.get(key, "sim-instance-ref-unloaded"),
            "contextLength": 4096,
        }

    def loaded_infos(self) -> list[dict[str, Any]]:
        return [self.instance_info(key) for key in self._loaded]

    def downloaded_infos(self) -> list[dict[str, Any]]:
        return [self.model_info(key) for key in self._specs]

    def summary(self) -> list[dict[str, Any]]:
        """What `GET /simulator/models` shows."""
        return [{"key": s.key, "loaded": self.is_loaded(s.key), "reasoning": s.reasoning} for s in self._specs.values()]

    @staticmethod
    def load_config() -> dict[str, Any]:
        return {"fields": [{"key": "llm.load.contextLength", "value": 4096}]}


def specifier_query(spec: Any) -> str:
    """The model a `modelSpecifier`/`specifier` names: an instance reference, or a query's identifier/path."""
    if not isinstance(spec, dict):
        return ""
    if spec.get("type") == "instanceReference":
        return str(spec.get("instanceReference", ""))
    query = spec.get("query")
    return str(query.get("identifier") or query.get("path") or "") if isinstance(query, dict) else ""
