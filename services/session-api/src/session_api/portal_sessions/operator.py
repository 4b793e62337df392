"""Sessions an operator mints from the command line (``billfold portal link|preview``).

The same path as ``POST /v1/portal_sessions`` (``service.prepare``, the one create
statement, ``service.finish``, the Redis link index), with the site standing in for an
API key: the operator holds the database, not a key. A preview is a session marked
``preview`` in the same transaction; portal-web shows it with a banner and refuses
every action it is asked for.
"""

from __future__ import annotations

import dataclasses

import redis.asyncio as aioredis

from billfold.settings import Settings
from session_api.dbtypes import Conn
from session_api.keys.repository import KeyOwner
from session_api.portal_sessions import link_index, repository, service
from session_api.portal_sessions.schemas import CreatePortalSession
from session_api.sites import repository as sites
from session_api.sites.repository import Site


def _owner(site: Site, domain: str | None) -> KeyOwner:
    return KeyOwner(
        key_id="",  # replaced by None in the statement: no key involved
        site_id=site.id,
        kind="secret",
        scopes=None,
        revoked=False,
        site_default_sections=site.default_sections,
        site_default_ttl=site.default_session_ttl,
        site_default_locale=site.default_locale,
        site_domain=domain,
    )


async def create(
    conn: Conn,
    redis: aioredis.Redis,
    settings: Settings,
    site: Site,
    params: CreatePortalSession,
    *,
    preview: bool = False,
) -> service.Created:
    """Create a session for ``params.customer`` of ``site``; raises ``ApiError`` (400
    ``resource_missing``) for a customer the site does not have."""
    domains = await sites.domains(conn, site.id)
    owner = _owner(site, domains[0] if domains else None)
    draft = service.prepare(owner, params, None, settings=settings)
    new = dataclasses.replace(draft.new, key_id=None)
    async with conn.transaction():
        key_live, customer_id = await repository.create_with_event(conn, new)
        created = service.finish(
            settings, dataclasses.replace(draft, new=new), key_live, customer_id
        )
        if preview:
            await conn.execute(
                "UPDATE portal.portal_sessions SET preview = true WHERE id = $1",
                created.body["id"],
            )
    await service.index(link_index.Writer(redis), settings, site.id, created)
    return created
