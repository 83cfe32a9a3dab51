"""lmstudio-proxy: the Aitronos Freddy HTTP API on localhost, backed by LM Studio."""

from __future__ import annotations

from proxy.background import BackgroundServer, serve_in_background

__version__ = "0.1.0"
__all__ = ["BackgroundServer", "__version__", "serve_in_background"]
