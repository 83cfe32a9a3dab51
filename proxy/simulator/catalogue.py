"""The simulated model catalogue: the downloaded models, their loaded instances, and query resolution.

Like LM Studio, a model (a `ModelSpec`, named by its key) may be loaded several times; each
instance has its own identifier (the key, then `key:2`, `key:3`, … unless the client chose one)
and instance reference. Instances loaded by `getOrLoad` are JIT instances: loading another
JIT instance unloads them (LM Studio's default "only keep the last JIT model" setting).
An instance with a TTL is unloaded once it has been idle that long; expiry is checked lazily,
whenever the catalogue is consulted, so no timer task is needed.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from proxy.simulator.models import ModelSpec, ModelType


class IdentifierTaken(ValueError):
    """A load asked for an identifier an instance already has."""


@dataclass(slots=True)
class Instance:
    """One loaded instance of a model."""

    identifier: str
    spec: ModelSpec
    reference: str
    jit: bool = False
    ttl_ms: int | None = None
    context_length: int = 4096
    last_used: float = 0.0  # ms since the epoch

    def info(self) -> dict[str, object]:
        """LM Studio's `LlmInstanceInfo` / `EmbeddingModelInstanceInfo` (plus the JS SDK 2.x fields)."""
        return {
            **self.spec.info(),
            "identifier": self.identifier,
            "instanceReference": self.reference,
            "contextLength": self.context_length,
            "lastUsedTime": self.last_used,
            "ttlMs": self.ttl_ms,
        }


class Catalogue:
    """The models the simulator knows and their instances (mutated only under the owner's lock)."""

    def __init__(
        self,
        specs: Iterable[ModelSpec],
        clock: Callable[[], float] = time.time,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self._clock = clock  # seconds since the epoch (tests pass their own to check TTL expiry)
        # Expiry mutates during reads: it takes the owner's (reentrant) lock, as every other change does.
        self._lock: AbstractContextManager[object] = lock if lock is not None else nullcontext()
        self._specs: dict[str, ModelSpec] = {}
        self._instances: dict[str, Instance] = {}  # by identifier, in load order
        self._refs: Iterator[int] = itertools.count(1)
        for spec in specs:
            if spec.key in self._specs:
                raise ValueError(f"duplicate model key {spec.key!r}")
            self._specs[spec.key] = spec
        if not self._specs:
            raise ValueError("the simulator needs at least one model")
        for spec in self._specs.values():
            if spec.loaded:
                self.load(spec.key)

    def specs(self, kind: ModelType | None = None) -> list[ModelSpec]:
        return [s for s in self._specs.values() if kind is None or s.type == kind]

    def spec(self, key: str) -> ModelSpec:
        return self._specs[key]

    # -- queries ---------------------------------------------------------------------------------

    def resolve(self, query: str | None, kind: ModelType | None = None) -> ModelSpec | None:
        """The downloaded model a query names: key, path, or a path prefix (any case), or an instance."""
        if not query:
            instance = self.instance(None, kind)
            return instance.spec if instance is not None else None
        candidates = self.specs(kind)
        if query in self._specs and query in {s.key for s in candidates}:
            return self._specs[query]
        lowered = query.lower()
        for spec in candidates:
            path = spec.model_path.lower()
            if lowered in (spec.key.lower(), path) or path.startswith(lowered.rstrip("/") + "/"):
                return spec
        for spec in candidates:  # `publisher/name` against `publisher/name-GGUF/...` and similar
            if spec.model_path.lower().startswith(lowered):
                return spec
        instance = self.instance(query, kind)
        return instance.spec if instance is not None else None

    def instance(self, query: str | None, kind: ModelType | None = None) -> Instance | None:
        """The loaded instance a query names: identifier or instance reference, else one of the model's."""
        instances = self.instances(kind)
        if not query:
            return instances[0] if instances else None
        lowered = query.lower()
        for inst in instances:
            if query in (inst.identifier, inst.reference) or inst.identifier.lower() == lowered:
                return inst
        spec = None
        for candidate in self.specs(kind):
            path = candidate.model_path.lower()
            if lowered in (candidate.key.lower(), path) or path.startswith(lowered):
                spec = candidate
                break
        return next((i for i in instances if spec is not None and i.spec is spec), None)

    def instances(self, kind: ModelType | None = None) -> list[Instance]:
        self._expire()
        return [i for i in self._instances.values() if kind is None or i.spec.type == kind]

    def is_loaded(self, key: str) -> bool:
        return any(i.spec.key == key for i in self.instances())

    def _expire(self) -> None:
        """Unload instances idle for longer than their TTL."""
        now = self._clock() * 1000
        with self._lock:
            for inst in list(self._instances.values()):
                if inst.ttl_ms is not None and now - inst.last_used > inst.ttl_ms:
                    del self._instances[inst.identifier]

    # -- changes ---------------------------------------------------------------------------------

    def load(
        self,
        key: str,
        identifier: str | None = None,
        *,
        jit: bool = False,
        ttl_ms: int | None = None,
        context_length: int | None = None,
    ) -> Instance:
        """Add an instance of `key`; raise IdentifierTaken if `identifier` is in use."""
        spec = self._specs[key]
        if identifier is not None and identifier in self._instances:
            raise IdentifierTaken(identifier)
        if identifier is None:
            identifier = key
            for n in itertools.count(2):
                if identifier not in self._instances:
                    break
                identifier = f"{key}:{n}"
        instance = Instance(
            identifier=identifier,
            spec=spec,
            reference=f"sim-instance-ref-{next(self._refs)}",
            jit=jit,
            ttl_ms=ttl_ms,
            context_length=context_length or min(spec.context_length, spec.max_context_length),
            last_used=self._clock() * 1000,
        )
        self._instances[identifier] = instance
        return instance

    def mark_loaded(self, key: str) -> Instance:
        """Load `key` if no instance of it is loaded (JIT loading by a prediction)."""
        existing = next((i for i in self._instances.values() if i.spec.key == key), None)
        return existing if existing is not None else self.load(key, jit=True)

    def unload(self, identifier: str) -> Instance | None:
        return self._instances.pop(identifier, None)

    def unload_model(self, key: str) -> None:
        """Unload every instance of `key`."""
        for identifier in [i.identifier for i in self._instances.values() if i.spec.key == key]:
            del self._instances[identifier]

    def jit_instances(self) -> list[Instance]:
        return [i for i in self._instances.values() if i.jit]

    def touch(self, instance: Instance) -> None:
        instance.last_used = self._clock() * 1000

    # -- listings --------------------------------------------------------------------------------

    def loaded_infos(self, kind: ModelType | None = None) -> list[dict[str, object]]:
        return [i.info() for i in self.instances(kind)]

    def downloaded_infos(self, kind: ModelType | None = None) -> list[dict[str, object]]:
        return [s.info() for s in self.specs(kind)]

    def summary(self) -> list[dict[str, object]]:
        """What `GET /simulator/models` shows."""
        return [
            {
                "key": s.key,
                "type": s.type,
                "loaded": self.is_loaded(s.key),
                "reasoning": s.reasoning,
                "vision": s.vision,
                "trained_for_tool_use": s.trained_for_tool_use,
                "instances": [i.identifier for i in self._instances.values() if i.spec is s],
            }
            for s in self._specs.values()
        ]

    @staticmethod
    def load_config(instance: Instance) -> dict[str, object]:
        return {"fields": [{"key": "llm.load.contextLength", "value": instance.context_length}]}
