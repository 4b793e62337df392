"""Links (``/r/{token}``): look one up without consuming it, and consume it once.

The link belongs to session-api (``portal.portal_sessions``, read only here); its use
belongs to portal-web (``web.link_uses``). Consuming is ONE transaction that records
the use, creates the browser session and enqueues ``portal_session.used`` in
portal-web's own outbox. For a single-use link the primary key of ``web.link_uses``
picks the winner: ``INSERT … ON CONFLICT DO NOTHING RETURNING`` inserts for exactly
one of any number of concurrent consumers; the others get no row and nothing else
they wrote commits.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from billfold import outbox, tokens
from billfold.events import PortalSessionData, PortalSessionUsed
from portal_web import browser_sessions
from portal_web.dbtypes import Executor

SCHEMA = "web"


class LinkState(enum.Enum):
    ACTIVE = "active"
    USED = "used"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Link:
    session_id: str
    site_id: str
    customer_id: str
    token_hash: str
    single_use: bool
    expires_at: datetime
    revoked_at: datetime | None
    used_at: datetime | None
    return_url: str | None
    locale: str | None
    flow: dict[str, Any] | None = None  # the deep link the tenant asked for, if any

    def state(self, now: datetime) -> LinkState:
        # Same precedence as session-api's status: revoked, used, expired, active.
        if self.revoked_at is not None:
            return LinkState.REVOKED
        if self.single_use and self.used_at is not None:
            return LinkState.USED
        if self.expires_at <= now:
            return LinkState.EXPIRED
        return LinkState.ACTIVE


_LOOKUP = """
SELECT ps.id, ps.site_id, ps.customer_id, ps.token_hash, ps.single_use, ps.expires_at,
       ps.revoked_at, ps.return_url, ps.locale, ps.flow, lu.used_at
FROM portal.portal_sessions ps
LEFT JOIN web.link_uses lu ON lu.portal_session_id = ps.id
WHERE ps.token_hash = $1
"""


def _link(row: asyncpg.Record) -> Link:
    return Link(
        session_id=row["id"],
        site_id=row["site_id"],
        customer_id=row["customer_id"],
        token_hash=row["token_hash"],
        single_use=row["single_use"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        used_at=row["used_at"],
        return_url=row["return_url"],
        locale=row["locale"],
        flow=row["flow"],
    )


async def lookup(db: Executor, token: str) -> Link | None:
    """The link for ``token`` as Postgres has it now; never changes anything."""
    if not token.startswith(tokens.LINK_TOKEN_PREFIX) or len(token) > 128:
        return None
    row = await db.fetchrow(_LOOKUP, tokens.hash_token(token))
    return _link(row) if row is not None else None


# Single use: the winner is whoever inserts. Multi use: every use succeeds; the first
# one inserts (xmax = 0 tells an insert from an update), later ones count.
_USE_ONCE = """
INSERT INTO web.link_uses (portal_session_id, site_id, used_at, ip, user_agent)
VALUES ($1, $2, now(), $3, $4)
ON CONFLICT (portal_session_id) DO NOTHING
RETURNING used_at, true AS first
"""
_USE_AGAIN = """
INSERT INTO web.link_uses AS lu (portal_session_id, site_id, used_at, ip, user_agent)
VALUES ($1, $2, now(), $3, $4)
ON CONFLICT (portal_session_id)
DO UPDATE SET uses = lu.uses + 1, last_used_at = now()
RETURNING used_at, (xmax = 0) AS first
"""
# Re-read inside the transaction: a revoke or expiry since the page was shown wins.
_STILL_LIVE = """
SELECT sections, expires_at FROM portal.portal_sessions
WHERE id = $1 AND site_id = $2 AND revoked_at IS NULL AND expires_at > now()
"""


@dataclass(frozen=True, slots=True)
class Consumed:
    token: str  # the browser session's bfs_ token: returned once, stored hashed
    browser_session_id: str


async def consume(
    pool: asyncpg.Pool,
    link: Link,
    *,
    ip: str | None,
    user_agent: str | None,
    embedded: bool,
    request_id: str | None,
) -> Consumed | None:
    """Use ``link``: None if another use won (single use) or it is no longer live."""
    async with pool.acquire() as conn, conn.transaction():
        live = await conn.fetchrow(_STILL_LIVE, link.session_id, link.site_id)
        if live is None:
            return None
        used = await conn.fetchrow(
            _USE_ONCE if link.single_use else _USE_AGAIN,
            link.session_id,
            link.site_id,
            ip,
            user_agent[:512] if user_agent else None,
        )
        if used is None:
            return None  # lost the race: nothing of this transaction is kept
        created = await browser_sessions.create(
            conn,
            portal_session_id=link.session_id,
            site_id=link.site_id,
            customer_id=link.customer_id,
            expires_at=live["expires_at"],
            embedded=embedded,
        )
        if used["first"]:
            await outbox.enqueue(
                conn,
                SCHEMA,
                _used_event(link, used["used_at"], ip, user_agent, request_id),
                ordering_key=link.session_id,
            )
    return Consumed(token=created.token, browser_session_id=created.id)


def _used_event(
    link: Link, at: datetime, ip: str | None, user_agent: str | None, request_id: str | None
) -> PortalSessionUsed:
    data: dict[str, Any] = {
        "session_id": link.session_id,
        "customer_id": link.customer_id,
        "expires_at": link.expires_at,
        "single_use": link.single_use,
        "locale": link.locale,
        "return_url": link.return_url,
        "at": at.astimezone(UTC),
        "ip": ip,
        "user_agent": user_agent,
    }
    return PortalSessionUsed(
        site_id=link.site_id, request_id=request_id, data=PortalSessionData(**data)
    )
