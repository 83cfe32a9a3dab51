"""lmstudio-proxy: the Aitronos Freddy HTTP API on localhost, backed by LM Studio."""

from __future__ import annotations

__version__ = "0.1.0"
