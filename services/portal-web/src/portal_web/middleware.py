"""The portal's own middleware, inside billfold's standard one: security headers, error
pages, hosts and previews, in that order (outermost first), as one layer.

- **Security headers** (``security``) on every response, error pages and redirects too.
- **Error pages** (``pages``): a page's ``PageError`` or HTTP error becomes the branded
  page in the customer's language; JSON API paths, health and files are left to
  billfold's error middleware.
- **Hosts** (``hosts``): unknown hosts refused (421), custom domains bound to their site.
- **Previews** (``preview``): an action of a read-only preview is refused (403).

They used to be four aiohttp middlewares; each layer cost every request a coroutine and
a ``partial`` of its own, for checks that are a few comparisons on the common path
(docs/PERFORMANCE.md).
"""

from __future__ import annotations

from aiohttp import web

from billfold.http.middlewares import Handler, Middleware
from billfold.settings import Settings
from portal_web import i18n
from portal_web.hosts import admit_host, own_hosts
from portal_web.pages import is_page, page_for_exception
from portal_web.preview import refuse_preview_action
from portal_web.security import header_setter


def portal_middleware(settings: Settings) -> Middleware:
    set_headers = header_setter(settings)
    ours = own_hosts(settings)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        i18n.reset()
        try:
            if is_page(request.path):
                try:
                    await admit_host(request, ours)
                    await refuse_preview_action(request)
                    response = await handler(request)
                except Exception as exc:  # each kind is answered in page_for_exception
                    response = page_for_exception(request, exc)
            else:  # JSON: billfold's error middleware answers
                await admit_host(request, ours)
                await refuse_preview_action(request)
                response = await handler(request)
        except web.HTTPException as exc:  # a redirect (errors became pages above)
            set_headers(request, exc)
            raise
        set_headers(request, response)
        return response

    return middleware
