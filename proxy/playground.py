"""The browser playground: a small chat page at `/`, its static files (shipped in the package) under `/static`."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"

# The page loads nothing from elsewhere (no CDN) and has no inline script or style: say so to the browser.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


async def index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


routes: list[BaseRoute] = [
    Route("/", index, methods=["GET", "HEAD"]),
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
]
