"""``billfold demo``: a ready-to-try site, safe to run any number of times.

Until billing-sync exists, the demo customers go straight into the customer mirror.
"""

from __future__ import annotations

from typing import Any

from billfold import tokens
from billfold.cache import create_redis
from billfold.settings import Settings
from session_api.customers import repository as customers
from session_api.dbtypes import Conn
from session_api.keys import repository as keys
from session_api.portal_sessions import link_index, service
from session_api.portal_sessions.schemas import CreatePortalSession
from session_api.sites import repository as sites

SLUG = "demo"
DEMO_CUSTOMERS = (
    ("demo-ada", "ada@example.com", "Ada Lovelace"),
    ("demo-grace", "grace@example.com", "Grace Hopper"),
    ("demo-alan", "alan@example.com", "Alan Turing"),
)


async def run_demo(settings: Settings, conn: Conn) -> dict[str, Any]:
    async with conn.transaction():
        site = await sites.ensure(conn, slug=SLUG, name="Demo Co")
        people = [
            await customers.upsert(conn, site.id, external_id=ext, email=email, name=name)
            for ext, email, name in DEMO_CUSTOMERS
        ]
        _, secret = await keys.create(conn, site.id, "secret")
    owner = await keys.owner_by_hash(conn, tokens.hash_token(secret))
    assert owner is not None
    created = await service.create(
        conn, settings, owner, CreatePortalSession(customer=people[0].id), request_id=None
    )
    redis = create_redis(settings)
    try:
        await service.index(link_index.Writer(redis), settings, site.id, created)
    finally:
        await redis.aclose()
    return {
        "site": site.slug,
        "api_key": secret,
        "customers": [
            {"id": c.id, "external_id": c.external_id, "email": c.email, "name": c.name}
            for c in people
        ],
        "portal_url": created.body["url"],
    }
