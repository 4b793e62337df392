"""Read-only previews (``billfold portal preview``): every action refused, server-side.

Actions are POSTs under the portal's prefixes (``/p/…``, ``/e/{bfs_…}/…``). Rather than
trust each action handler to check, the portal's middleware authenticates every such POST
first and answers a preview session's with 403 and the "read-only preview" page, so
an action added later is covered without a line of its own. Sign-out stays allowed.
``portal_routes.require_action`` refuses previews as well.
"""

from __future__ import annotations

from aiohttp import web

from portal_web import credentials
from portal_web.pages import PageError
from portal_web.portal_routes import authenticate


def _is_action(request: web.Request) -> bool:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    path = request.path
    portal = path.startswith(credentials.TOP_PREFIX + "/") or path.startswith(
        credentials.FRAME_PREFIX + "/"
    )
    return portal and not path.endswith("/sign-out")


async def refuse_preview_action(request: web.Request) -> None:
    """Raise the 403 "read-only preview" page for an action of a preview session
    (called by the portal's middleware before any handler)."""
    if _is_action(request):
        principal = await authenticate(request)
        if principal.preview:
            raise PageError(403, "preview")
