"""Model selection: request `model` → config alias → LM Studio key, from a cache of LM Studio's models."""

from __future__ import annotations

from typing import Any

from proxy.backends import Backends
from proxy.config import Config
from proxy.errors import BackendUnavailable, ResourceNotFound
from proxy.wire.bodies import Model, V5Model


class ModelCatalog:
    """What LM Studio has (loaded and downloaded), refreshed when a name is unknown or on /v1/models.

    With several hosts, the union over the hosts that answer (`backends.Backends`).
    """

    def __init__(self, backends: Backends, config: Config) -> None:
        self.backends = backends
        self.aliases = dict(config.models.aliases)
        self.default = config.lmstudio.default_model

    @property
    def loaded(self) -> list[dict[str, Any]]:
        return self.backends.loaded()

    @property
    def downloaded(self) -> list[dict[str, Any]]:
        return self.backends.downloaded()

    async def refresh(self) -> None:
        await self.backends.refresh()

    def lookup(self, requested: str | None) -> str | None:
        """The model key to use, from what is known of LM Studio's models already (None: the
        listing must be asked for, by `resolve`). This is on every request's path."""
        name = requested or self.default or None
        if name is None:
            return str(self.loaded[0]["identifier"]) if self.loaded else None
        key = self.aliases.get(name, name)
        return key if self.backends.knows(key) else None

    async def resolve(self, requested: str | None) -> str:
        """The LM Studio model key to use, or ResourceNotFound listing what is available.

        A name the cache knows costs no round trip to LM Studio (`lookup`); only an unknown name
        (or an empty cache) refreshes it. A model unloaded since is loaded again on use, as LM
        Studio does for a prediction.
        """
        known = self.lookup(requested)
        if known is None:
            await self.refresh()
            known = self.lookup(requested)
        if known is not None:
            return known
        name = requested or self.default or None
        if name is None:
            if self.downloaded:
                return str(self.downloaded[0]["key"])
            raise BackendUnavailable(
                "LM Studio has no model loaded or downloaded. Download a model in LM Studio "
                "(or `lms get MODEL`), or name one with `model` in the request."
            )
        key = self.aliases.get(name, name)
        down = self.backends.down_holding(key)
        if down:
            raise BackendUnavailable(
                f"Model '{name}' is on LM Studio host(s) that do not answer now: {', '.join(down)}.",
                {"model": name, "hosts": down},
            )
        raise ResourceNotFound(
            f"Model '{name}' not found. Available: {', '.join(self.available()) or 'none'}.",
            {"model": name, "available": self.available()},
        )

    def vision(self, key: str) -> bool | None:
        """Whether the model takes images, as LM Studio's model info says (None: not known)."""
        for m in (*self.loaded, *self.downloaded):
            if key in (m.get("identifier"), m.get("key")) and "vision" in m:
                return bool(m["vision"])
        return None

    def available(self) -> list[str]:
        names = [m["identifier"] for m in self.loaded]
        names += [m["key"] for m in self.downloaded if m["key"] not in names]
        return names + sorted(a for a in self.aliases if a not in names)

    def listing(self) -> list[Model]:
        data: list[Model] = []
        seen = set()
        for m in self.loaded:
            seen.add(m["key"])
            data.append(
                {
                    "id": m["identifier"],
                    "object": "model",
                    "display_name": m["display_name"],
                    "loaded": True,
                    "context_length": m["context_length"],
                }
            )
        for m in self.downloaded:
            if m["key"] not in seen:
                data.append(
                    {
                        "id": m["key"],
                        "object": "model",
                        "display_name": m["display_name"],
                        "loaded": False,
                        "context_length": m["context_length"],
                    }
                )
        return data

    def entries(self) -> list[tuple[dict[str, Any], bool]]:
        """Each model once, loaded ones first: (its info, whether it is loaded)."""
        seen = {m["key"] for m in self.loaded}
        return [(m, True) for m in self.loaded] + [(m, False) for m in self.downloaded if m["key"] not in seen]

    def v5_listing(
        self,
        *,
        capabilities: bool = True,
        details: bool = False,
        pricing: bool = False,
        last_used: dict[str, str] | None = None,
    ) -> list[V5Model]:
        """The models in v5's `ModelResponse` shape (see `wire.bodies.V5Model`)."""
        out: list[V5Model] = []
        for m, loaded in self.entries():
            key = str(m["identifier"] if loaded else m["key"])
            entry: V5Model = {
                "id": key,
                "key": key,
                "name": m["display_name"],
                "provider": "lmstudio",
                "is_visible_in_ui": True,
                "is_deprecated": False,
                "availability_status": "general_availability",
                "context_window": m["context_length"],
                "loaded": loaded,
            }
            if capabilities:
                entry["capabilities"] = model_capabilities(m)
            if pricing:
                entry["pricing"] = {"message": "Local model: no cost"}
            if details:
                entry["description"] = _description(m, loaded)
                entry["model_version"] = m.get("params_string")
                for name in ("max_context_length", "architecture", "params_string", "format", "size_bytes"):
                    entry[name] = m.get(name)
            if last_used is not None:
                entry["last_used_at"] = last_used.get(key) or last_used.get(str(m["key"]))
            out.append(entry)
        return out


def model_capabilities(info: dict[str, Any]) -> list[str]:
    """v5's capability names for what LM Studio reports of a model (`vision`, `trainedForToolUse`)."""
    caps = ["text_generation", "conversation", "streaming"]
    if info.get("vision"):
        caps.append("vision")
    if info.get("trained_for_tool_use"):
        caps.append("tool_calling")
    return caps


def _description(info: dict[str, Any], loaded: bool) -> str:
    facts = [f for f in (info.get("params_string"), info.get("architecture"), info.get("format")) if f]
    state = "loaded in LM Studio" if loaded else "downloaded in LM Studio, loaded on first use"
    return f"{info['display_name']} ({', '.join(str(f) for f in facts) or 'LLM'}), {state}"
