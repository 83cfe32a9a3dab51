"""The `repository` namespace: an offline stand-in for LM Studio's model hub, over the simulator's catalogue.

Every model the simulator knows is already downloaded, so the hub offers exactly those: a search
matches their keys, paths and names; each has one download option (its file); "downloading" it
streams progress, finalizes, and names the model's key, without touching the network.
"""

from __future__ import annotations

import asyncio
from typing import Any

from proxy.simulator import protocol
from proxy.simulator.channel import Channel, Connection
from proxy.simulator.clock import pause
from proxy.simulator.models import ModelSpec
from proxy.simulator.state import SimState

DOWNLOAD_STEPS = 5
MAX_RESULTS = 25  # LM Studio's limit on `limit`


def _repo(spec: ModelSpec) -> str:
    """`publisher/Repo-GGUF`: the model file's folder, the hub's identifier for it."""
    return spec.model_path.rsplit("/", 1)[0]


def search(state: SimState, parameter: Any) -> dict[str, Any]:
    """`searchModels`: catalogue models whose key, repository or display name contains the term."""
    opts = parameter.get("opts") if isinstance(parameter, dict) else None
    opts = opts if isinstance(opts, dict) else {}
    term = str(opts.get("searchTerm") or "").lower()
    limit = opts.get("limit")
    limit = limit if isinstance(limit, int) and 0 < limit <= MAX_RESULTS else MAX_RESULTS
    results = []
    for spec in state.catalogue.specs():
        names = (spec.key.lower(), _repo(spec).lower(), (spec.display_name or "").lower())
        if not term or any(term in name for name in names):
            exact = term in (spec.key.lower(), _repo(spec).lower())
            results.append(
                {"name": _repo(spec), "identifier": {"type": "hf", "identifier": _repo(spec)}, "exact": exact}
            )
    return {"results": results[:limit]}


def download_options(state: SimState, parameter: Any) -> dict[str, Any] | None:
    """`getModelDownloadOptions`: the one file of the repository a search result names (None: unknown)."""
    identifier = parameter.get("modelSearchResultIdentifier") if isinstance(parameter, dict) else None
    repo = identifier.get("identifier") if isinstance(identifier, dict) else None
    specs = [s for s in state.catalogue.specs() if _repo(s) == repo]
    if not specs:
        return None
    return {
        "results": [
            {
                "name": spec.model_path.rsplit("/", 1)[-1],
                "sizeBytes": spec.size,
                "fitEstimation": "fullGPUOffload",
                "downloadIdentifier": spec.model_path,
                "indexedModelIdentifier": spec.model_path,
                "quantization": spec.quantization,
                "recommended": i == 0,
            }
            for i, spec in enumerate(specs)
        ]
    }


class DownloadChannel(Channel):
    """`downloadModel`: downloadProgress… → startFinalizing → success {defaultIdentifier}."""

    def __init__(self, conn: Connection, channel_id: int, state: SimState, params: Any) -> None:
        super().__init__(conn, channel_id, state)
        identifier = params.get("downloadIdentifier") if isinstance(params, dict) else None
        self._identifier = identifier if isinstance(identifier, str) else ""
        self._cancel = asyncio.Event()

    def receive(self, message: Any) -> None:
        if isinstance(message, dict) and message.get("type") == "cancel":
            self._cancel.set()

    async def run(self) -> None:
        spec = next((s for s in self.state.catalogue.specs() if s.model_path == self._identifier), None)
        if spec is None:
            await self.fail(protocol.server_error(f'Cannot find a download named "{self._identifier}"'))
            return
        step = self.state.settings_for(spec.key).load_seconds / DOWNLOAD_STEPS
        total = spec.size
        for i in range(1, DOWNLOAD_STEPS + 1):
            if await pause(step, self._cancel):
                await self.fail(protocol.server_error(f"Downloading {spec.key!r} was cancelled"))
                return
            update = {"downloadedBytes": total * i // DOWNLOAD_STEPS, "totalBytes": total, "speedBytesPerSecond": 1e8}
            await self.send({"type": "downloadProgress", "update": update})
        await self.send({"type": "startFinalizing"})
        await self.send({"type": "success", "defaultIdentifier": spec.key})
        await self.close()
