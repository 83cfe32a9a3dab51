"""RPC endpoints per namespace: model listings and info, tokens, embeddings, prompt templates, files."""

from __future__ import annotations

from typing import Any

from proxy.simulator import embeddings, protocol, repository, textgen
from proxy.simulator.catalogue import Instance
from proxy.simulator.files import UploadError
from proxy.simulator.models import ModelType, specifier_query
from proxy.simulator.state import SimState


class RpcFailure(Exception):
    """An RPC that LM Studio would answer with `rpcError`."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("title"))
        self.error = error


def _loaded(state: SimState, parameter: Any, kind: ModelType) -> Instance:
    """The loaded instance a specifier names (an unloaded or unknown one is 'not found', as in LM Studio)."""
    query = specifier_query(parameter.get("specifier") if isinstance(parameter, dict) else None)
    if not query and isinstance(parameter, dict):
        query = specifier_query(parameter.get("modelSpecifier"))
    instance = state.catalogue.instance(query, kind)
    if instance is None:
        loaded = [i.identifier for i in state.catalogue.instances(kind)]
        raise RpcFailure(protocol.model_not_found(query, loaded))
    return instance


def _input_string(parameter: Any) -> str:
    text = parameter.get("inputString") if isinstance(parameter, dict) else None
    return text if isinstance(text, str) else ""


def _apply_prompt_template(parameter: Any) -> dict[str, Any]:
    history = parameter.get("history") if isinstance(parameter, dict) else None
    messages = history.get("messages", []) if isinstance(history, dict) else []
    lines = []
    for message in messages:
        parts = message.get("content", []) if isinstance(message, dict) else []
        text = "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))
        lines.append(f"<|{message.get('role', 'user')}|>\n{text}<|end|>")
    return {"formatted": "\n".join(lines) + "\n<|assistant|>\n"}


def _unload(state: SimState, parameter: Any, kind: ModelType) -> None:
    identifier = parameter.get("identifier") if isinstance(parameter, dict) else None
    catalogue = state.catalogue
    instance = catalogue.instance(identifier, kind) if isinstance(identifier, str) and identifier else None
    if instance is None:
        loaded = [i.identifier for i in catalogue.instances(kind)]
        raise RpcFailure(protocol.model_not_found(str(identifier), loaded))
    with state.changing():
        catalogue.unload(instance.identifier)


def _model_rpc(state: SimState, kind: ModelType, endpoint: str, parameter: Any) -> Any:
    """The endpoints `llm` and `embedding` share."""
    catalogue = state.catalogue
    if endpoint == "listLoaded":
        return catalogue.loaded_infos(kind)
    if endpoint == "getModelInfo":
        try:
            return _loaded(state, parameter, kind).info()
        except RpcFailure:
            if isinstance(parameter, dict) and parameter.get("throwIfNotFound") is False:
                return None
            raise
    if endpoint == "getLoadConfig":
        return catalogue.load_config(_loaded(state, parameter, kind))
    if endpoint in ("countTokens", "tokenize"):
        instance = _loaded(state, parameter, kind)
        text = _input_string(parameter)
        if endpoint == "countTokens":
            return {"tokenCount": textgen.count_tokens(text)}
        tokens = textgen.tokenize(text)
        # An embedding model's tokenizer adds its start and end markers (as nomic-embed's does).
        return {"tokens": [1, *tokens, 2] if instance.spec.type == "embedding" else tokens}
    if endpoint == "unloadModel":
        _unload(state, parameter, kind)
        return None
    raise RpcFailure(protocol.server_error(f"Unknown RPC endpoint {kind}/{endpoint}"))


def call(state: SimState, namespace: str, endpoint: str, parameter: Any) -> Any:
    """Answer one RPC; raise RpcFailure for errors LM Studio reports as `rpcError`."""
    catalogue = state.catalogue
    if namespace == "system":
        if endpoint == "listDownloadedModels":
            return catalogue.downloaded_infos()
        if endpoint == "version":
            return {"version": "0.3.99-simulator", "build": 1}
    if namespace == "llm":
        if endpoint == "applyPromptTemplate":
            _loaded(state, parameter, "llm")
            return _apply_prompt_template(parameter)
        return _model_rpc(state, "llm", endpoint, parameter)
    if namespace == "embedding":
        if endpoint == "embedString":
            instance = _loaded(state, parameter, "embedding")
            return {"embedding": embeddings.vector(_input_string(parameter), instance.spec.embedding_length)}
        return _model_rpc(state, "embedding", endpoint, parameter)
    if namespace == "repository":
        if endpoint == "searchModels":
            return repository.search(state, parameter)
        if endpoint == "getModelDownloadOptions":
            options = repository.download_options(state, parameter)
            if options is None:
                raise RpcFailure(protocol.server_error("No such model in the (simulated) model hub"))
            return options
    if namespace == "files":
        if endpoint == "uploadFileBase64":
            try:
                with state.changing():
                    return state.files.upload(parameter)
            except UploadError as exc:
                raise RpcFailure(protocol.server_error(str(exc))) from exc
        if endpoint == "getLocalFileAbsolutePath":
            return {"path": state.files.local_path(parameter)}
    raise RpcFailure(protocol.server_error(f"Unknown RPC endpoint {namespace}/{endpoint}"))
