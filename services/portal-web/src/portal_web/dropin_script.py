"""``/js/v1/billfold.js``: the drop-in script tenants load on their own pages.

Our own small file (``dropin/v1/billfold.js``), served from the portal's origin, which
is also how the script learns the portal's origin (its ``<script src>``). Any page may
load it: ``Cross-Origin-Resource-Policy: cross-origin`` and ``Access-Control-Allow-
Origin: *`` (it is public and carries no credentials). ``v1`` is the API's major
version: compatible fixes ship under the same path, so it is cached for a day (with a
week of stale-while-revalidate) and revalidated by ETag, not marked immutable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aiohttp import web

PATH = "/js/v1/billfold.js"
_FILE = Path(__file__).parent / "dropin" / "v1" / "billfold.js"
_BODY = _FILE.read_bytes()
ETAG = '"' + hashlib.sha256(_BODY).hexdigest()[:32] + '"'
CACHE_CONTROL = "public, max-age=86400, stale-while-revalidate=604800"


def _headers() -> dict[str, str]:
    return {
        "Cache-Control": CACHE_CONTROL,
        "ETag": ETAG,
        "Access-Control-Allow-Origin": "*",
        "Cross-Origin-Resource-Policy": "cross-origin",
        "Vary": "Accept-Encoding",
    }


async def script(request: web.Request) -> web.StreamResponse:
    if ETAG in {t.strip() for t in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=_headers())
    return web.Response(
        body=_BODY, content_type="text/javascript", charset="utf-8", headers=_headers()
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(PATH, script)
