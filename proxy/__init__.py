"""lmstudio-proxy: the Aitronos Freddy HTTP API on localhost, backed by LM Studio.

Importing `proxy` is cheap on purpose: the command line (`proxy.cli`) and every subcommand
import it, and the web app and the `lmstudio` SDK take about a second to import. The public
names below are resolved on first use (PEP 562), and `__version__` is read from the installed
package's metadata, so pyproject.toml is the one place the version is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.background import BackgroundServer, serve_in_background

    __version__: str

__all__ = ["BackgroundServer", "__version__", "serve_in_background"]

_LAZY = {"BackgroundServer": "proxy.background", "serve_in_background": "proxy.background"}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("lmstudio-proxy")
        except PackageNotFoundError:  # a source tree on sys.path, never installed
            value = "0+unknown"
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'proxy' has no attribute {name!r}")
    globals()[name] = value  # later lookups find it without calling __getattr__ again
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
