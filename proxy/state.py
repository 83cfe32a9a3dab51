"""What a request handler reaches: the proxy's parts, built by the app factory (a leaf module)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs
from starlette.requests import Request

if TYPE_CHECKING:
    from proxy.auth import Authenticator
    from proxy.bridge import Bridge
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
    bridge: Bridge
    registry: StreamRegistry
    catalog: ModelCatalog
    auth: Authenticator
    metrics: Metrics


def proxy_of(request: Request) -> Proxy:
    """The proxy serving this request (handlers never import the app module)."""
    proxy: Proxy = request.app.state.proxy
    return proxy
