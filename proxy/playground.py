"""The browser playground: a small chat page at `/`, its static files (shipped in the package) under `/static`."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from proxy.routing import Endpoints, Operation

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


api = Endpoints()


@api.get(
    "/",
    Operation(
        "playground", "The playground: a chat page in the browser", "meta", public=True, media="text/html",
        response_description="The playground page",
    ),
)  # fmt: skip
async def index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


routes: list[BaseRoute] = [
    *api.routes,
    Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
]
