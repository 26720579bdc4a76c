"""``/console``: the web console, static files served on the API's own origin.

The page and its bundle load without an API key; everything they show comes from the API,
each call sending the key the user typed (kept in the tab's ``sessionStorage`` only). The
bundle is built from ``console/`` (Preact + htm, xterm.js, esbuild: ``make console``) into
``static/`` and committed, so ``hutch serve`` needs no Node. Asset names carry a content
hash and are cached for a year; ``index.html`` is revalidated on every load.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse

from hutch.core.errors import NotFound

__all__ = ["STATIC", "router"]

STATIC = Path(__file__).parent / "static"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".map": "application/json",
    ".woff2": "font/woff2",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
_ASSET = re.compile(r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.(?:js|css|map|woff2|svg|txt)$")

# connect-src 'self' covers the same origin's ws:/wss: (CSP level 3). xterm.js sets inline
# styles on its elements, hence style-src 'unsafe-inline'; no script runs inline.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)


@router.get("/console")
async def index() -> FileResponse:
    """The console's page; revalidated on every load so a new build is picked up at once."""
    return FileResponse(
        STATIC / "index.html",
        media_type=_TYPES[".html"],
        headers={**_COMMON, "Cache-Control": "no-cache"},
    )


@router.get("/console/")
async def index_slash() -> RedirectResponse:
    return RedirectResponse("/console", status_code=308)


@router.get("/console/assets/{name}")
async def asset(name: str, request: Request) -> FileResponse:
    """A built file; its name has its content's hash in it, so it never changes. Scripts
    and styles go gzipped (built beside them) to a client that accepts gzip."""
    path = STATIC / "assets" / name
    if not _ASSET.match(name) or not path.is_file():
        raise NotFound(f"no console asset {name!r}")
    headers = {
        **_COMMON,
        "Cache-Control": "public, max-age=31536000, immutable",
        "Vary": "Accept-Encoding",
    }
    packed = path.with_name(name + ".gz")
    if _takes_gzip(request.headers.get("accept-encoding", "")) and packed.is_file():
        headers["Content-Encoding"] = "gzip"
        return FileResponse(packed, media_type=_TYPES[path.suffix], headers=headers)
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=headers)


def _takes_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
