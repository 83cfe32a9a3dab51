"""RPC endpoints per namespace: model listings, model info, tokens, prompt templates."""

from __future__ import annotations

from typing import Any

from proxy.simulator import protocol, textgen
from proxy.simulator.models import ModelSpec, specifier_query
from proxy.simulator.state import SimState


class RpcFailure(Exception):
    """An RPC that LM Studio would answer with `rpcError`."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("title"))
        self.error = error


def _loaded_model(state: SimState, parameter: Any) -> ModelSpec:
    """The loaded model a specifier names (an unloaded or unknown one is 'not found', as in LM Studio)."""
    query = specifier_query(parameter.get("specifier") if isinstance(parameter, dict) else None)
    spec = state.catalogue.resolve(query)
    if spec is None or not state.catalogue.is_loaded(spec.key):
        loaded = [info["identifier"] for info in state.catalogue.loaded_infos()]
        raise RpcFailure(protocol.model_not_found(query, loaded))
    return spec


def _input_string(parameter: Any) -> str:
    text = parameter.get("inputString") if isinstance(parameter, dict) else None
    return text if isinstance(text, str) else ""


def _apply_prompt_template(parameter: Any) -> dict[str, Any]:
    history = parameter.get("history") if isinstance(parameter, dict) else None
    messages = history.get("messages", []) if isinstance(history, dict) else []
    lines = []
    for message in messages:
        parts = message.get("content", []) if isinstance(message, dict) else []
        text = "".join(p.get("text", "") for p in parts if isinstance(p, dict))
        lines.append(f"<|{message.get('role', 'user')}|>\n{text}<|end|>")
    return {"formatted": "\n".join(lines) + "\n<|assistant|>\n"}


def call(state: SimState, namespace: str, endpoint: str, parameter: Any) -> Any:
    """Answer one RPC; raise RpcFailure for errors LM Studio reports as `rpcError`."""
    catalogue = state.catalogue
    if namespace == "system" and endpoint == "listDownloadedModels":
        return catalogue.downloaded_infos()
    if namespace == "system" and endpoint == "version":
        return {"version": "0.3.99-simulator", "build": 1}
    if namespace == "llm":
        if endpoint == "listLoaded":
            return catalogue.loaded_infos()
        if endpoint == "getModelInfo":
            try:
                return catalogue.instance_info(_loaded_model(state, parameter).key)
            except RpcFailure:
                if isinstance(parameter, dict) and parameter.get("throwIfNotFound") is False:
                    return None
                raise
        if endpoint == "getLoadConfig":
            _loaded_model(state, parameter)
            return catalogue.load_config()
        if endpoint == "countTokens":
            _loaded_model(state, parameter)
            return {"tokenCount": textgen.count_tokens(_input_string(parameter))}
        if endpoint == "tokenize":
            _loaded_model(state, parameter)
            return {"tokens": textgen.tokenize(_input_string(parameter))}
        if endpoint == "applyPromptTemplate":
            _loaded_model(state, parameter)
            return _apply_prompt_template(parameter)
        if endpoint == "unloadModel":
            identifier = parameter.get("identifier") if isinstance(parameter, dict) else None
            spec = catalogue.resolve(identifier) if isinstance(identifier, str) else None
            if spec is None or not catalogue.is_loaded(spec.key):
                raise RpcFailure(protocol.server_error(f"No loaded model with identifier {identifier!r}"))
            with state.changing():
                catalogue.unload(spec.key)
            return None
    if namespace == "embedding" and endpoint == "listLoaded":
        return []
    raise RpcFailure(protocol.server_error(f"Unknown RPC endpoint {namespace}/{endpoint}"))
