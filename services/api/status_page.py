"""GET /: the status page. Static files shipped in the package (services/api/static/), no
build step and nothing from the internet; the page polls the JSON endpoints (/health,
/stats, /mesh/services, /mesh/peers, /v1/models) itself, so nothing here renders data.

Every file is read once, at import: the set of assets is fixed, and a name that is not one
of them (`../app.py`, a typo) is a 404 in our error shape, never a path on disk.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable

from starlette.requests import Request
from starlette.responses import Response

from services.api.errors import ApiError

PAGE = "index.html"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Only our own files and our own origin: data from other nodes (service names, worker ids)
# reaches the page through fetch() and is written as text, and the CSP would stop a script
# injected anyway. `no-cache` revalidates (by ETag) so an upgraded node serves its new page.
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                      "connect-src 'self'; base-uri 'none'; form-action 'none'; "
                                      "frame-ancestors 'none'"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets(folder: Traversable) -> dict[str, Asset]:
    """Each file of `folder` of a type we serve, by name."""
    found = {}
    for entry in folder.iterdir():
        media_type = TYPES.get("." + entry.name.rpartition(".")[2])
        if entry.is_file() and media_type is not None:
            body = entry.read_bytes()
            found[entry.name] = Asset(body, media_type, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
    return found


def answer(asset: Asset | None, if_none_match: str | None) -> Response:
    """The asset, a 304 when the client holds this version, or a 404."""
    if asset is None:
        return ApiError(404, "not_found", "no such file of the status page; the page is at /").response()
    headers = {**HEADERS, "ETag": asset.etag}
    if if_none_match is not None and asset.etag in (tag.strip() for tag in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


ASSETS = load_assets(files("services.api") / "static")


async def page(request: Request) -> Response:
    """The page for every view (`/?node=<id>`, `#service=<name>`): the script reads which."""
    return answer(ASSETS[PAGE], request.headers.get("if-none-match"))


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    return answer(ASSETS.get(name) if name != PAGE else None, request.headers.get("if-none-match"))
