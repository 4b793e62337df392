"""``billfold demo``: session-api's half of the demo, a ready-to-try site and API key.

Safe to run any number of times (the site is ensured; each run mints a new secret key).
The demo's customers are not made here: they live in Stripe, where billing-sync creates
them (``billfold stripe demo``) and mirrors them, since the mirror is billing-sync's.
``make run`` (``scripts/run.sh``) runs both halves and then asks this service's API for
a portal link, as a tenant would.
"""

from __future__ import annotations

from billfold.settings import Settings
from session_api.dbtypes import Conn
from session_api.keys import repository as keys
from session_api.sites import repository as sites

SLUG = "demo"
# The drop-in example (examples/dropin, served by ``python3 -m http.server 8090``) may
# frame the demo site's portal.
EXAMPLE_ORIGIN = "http://localhost:8090"


async def run_demo(settings: Settings, conn: Conn) -> dict[str, str]:
    async with conn.transaction():
        site = await sites.ensure(conn, slug=SLUG, name="Demo Co")
        await conn.execute(
            "UPDATE portal.sites SET frame_ancestors = array_append(frame_ancestors, $2) "
            "WHERE id = $1 AND NOT ($2 = ANY (frame_ancestors))",
            site.id,
            EXAMPLE_ORIGIN,
        )
        _, secret = await keys.create(conn, site.id, "secret")
    return {"site": site.slug, "site_id": site.id, "api_key": secret}
