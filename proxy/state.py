"""What a request handler reaches: the proxy's parts, built by the app factory (a leaf module)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
from starlette.requests import Request

from proxy.errors import InsufficientPermissions, ResourceNotFound

if TYPE_CHECKING:
    from proxy.auth import Authenticator
    from proxy.backends import Backends
    from proxy.config import Config
    from proxy.metrics import Metrics
    from proxy.models import ModelCatalog
    from proxy.registry import StreamRegistry
    from proxy.store import Store


def default_database_path() -> Path:
    return Path(platformdirs.user_data_dir("lmstudio-proxy")) / "proxy.sqlite3"


@dataclass
class Proxy:
    """Everything a request handler needs, built by `create_app` and closed by its lifespan."""

    config: Config
    store: Store
    backends: Backends  # the LM Studio hosts
    registry: StreamRegistry
    catalog: ModelCatalog
    auth: Authenticator
    metrics: Metrics


def proxy_of(request: Request) -> Proxy:
    """The proxy serving this request (handlers never import the app module)."""
    proxy: Proxy = request.app.state.proxy
    return proxy


def owned(
    row: dict[str, Any] | None, owner: str, kind: str, item_id: str, verb: str = "access", **details: Any
) -> dict[str, Any]:
    """`row` if it exists and is the owner's: else 404, or 403 for another key's."""
    if row is None:
        raise ResourceNotFound(f"{kind.capitalize()} {item_id} not found", details)
    if row["owner"] != owner:
        raise InsufficientPermissions(f"You don't have permission to {verb} this {kind}")
    return row
