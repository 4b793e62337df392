"""SQL for ``portal.portal_sessions`` (every statement filters on ``site_id``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from billfold.bus import REQUEST_ID_HEADER
from billfold.events import PortalSessionCreated
from billfold.outbox import channel_name
from session_api.dbtypes import Conn, Executor

SCHEMA = "portal"
_COLUMNS = (
    "id, customer_id, single_use, sections, flow, return_url, locale, send_email, "
    "created_at, expires_at, used_at, revoked_at"
)
# What GET and list read: the session row plus its use, which portal-web records in its
# own schema (``web.link_uses``, the winner of a single-use link); session-api may read
# it, never write it. A plain subquery, so the WHERE fragments below keep their column
# names and Postgres still plans them on portal_sessions' indexes.
_READ_SOURCE = """(
    SELECT ps.id, ps.site_id, ps.customer_id, ps.single_use, ps.sections, ps.flow,
        ps.return_url, ps.locale, ps.send_email, ps.created_at, ps.expires_at,
        COALESCE(lu.used_at, ps.used_at) AS used_at,
        COALESCE(lu.ip, ps.used_ip) AS used_ip,
        COALESCE(lu.user_agent, ps.used_user_agent) AS used_user_agent,
        ps.revoked_at
    FROM portal.portal_sessions ps
    LEFT JOIN web.link_uses lu ON lu.portal_session_id = ps.id
) AS s"""
_READ_COLUMNS = _COLUMNS + ", used_ip, used_user_agent"

# The create path in ONE statement (one round trip, atomic without BEGIN/COMMIT): find
# the customer, check the API key is still live (so callers may skip the key lookup,
# see auth.OwnerCache), insert the session row and its outbox row (the shape
# ``billfold.outbox.enqueue`` writes, with the customer id filled in from the lookup),
# and NOTIFY the relay, which Postgres delivers at commit. No customer → no row
# inserted and no row returned. enqueue's advisory lock on the ordering key is not
# needed: nothing else can produce events for a session id that does not exist yet.
_CREATE_TEMPLATE = """
WITH k AS (
    -- No key ($17 NULL): an operator's command (`billfold portal link`), which holds
    -- the database itself rather than an API key.
    SELECT COALESCE(
        (SELECT revoked_at IS NULL FROM portal.api_keys WHERE id = $17 AND site_id = $2),
        $17::text IS NULL
    ) AS live
), c AS (
    SELECT id FROM mirror.customers
    WHERE site_id = $2 AND deleted_at IS NULL AND {match} AND (SELECT live FROM k)
    ORDER BY (id = $3) DESC
    LIMIT 1
), s AS (
    INSERT INTO portal.portal_sessions (id, site_id, customer_id, token_hash, single_use,
        sections, flow, return_url, locale, send_email, created_at, expires_at)
    SELECT $1, $2, c.id, $4, $5, $6::text::jsonb, $7::text::jsonb, $8, $9, $10, $11, $12
    FROM c
    RETURNING id, customer_id
), o AS (
    INSERT INTO portal.outbox (event_id, routing_key, ordering_key, payload, headers)
    SELECT $13, $14, s.id,
        jsonb_set($15::text::jsonb, '{{data,customer_id}}', to_jsonb(s.customer_id)),
        $16::text::jsonb
    FROM s
    RETURNING 1
), n AS (
    SELECT pg_notify('{channel}', '') FROM o
)
SELECT (SELECT live FROM k) AS key_live,
       (SELECT s.customer_id FROM s CROSS JOIN n) AS customer_id
"""
_CREATE_BY_ID = _CREATE_TEMPLATE.format(
    match="(id = $3 OR stripe_id = $3)", channel=channel_name(SCHEMA)
)
_CREATE_BY_EXTERNAL_ID = _CREATE_TEMPLATE.format(
    match="external_id = $3", channel=channel_name(SCHEMA)
)


@dataclass(frozen=True, slots=True)
class NewSession:
    """Everything the create statement writes for one session (and its event)."""

    key_id: str | None  # None: created by an operator command, not through a key
    session_id: str
    site_id: str
    customer: str  # Billfold/Stripe id, or external id
    by_external_id: bool
    token_hash: str
    single_use: bool
    sections: dict[str, Any]
    flow: dict[str, Any] | None
    return_url: str | None
    locale: str | None
    send_email: bool
    created_at: datetime
    expires_at: datetime
    event: PortalSessionCreated

    def headers_json(self) -> str:
        request_id = self.event.request_id
        return _dumps({REQUEST_ID_HEADER: request_id} if request_id else {})


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


async def create_with_event(conn: Executor, new: NewSession) -> tuple[bool, str | None]:
    """Create the session for ``new.customer`` and its event. Returns (key still live,
    Billfold customer id); nothing is written unless both hold. The event's
    ``data.customer_id`` is set here."""
    row = await conn.fetchrow(
        _CREATE_BY_EXTERNAL_ID if new.by_external_id else _CREATE_BY_ID,
        new.session_id,
        new.site_id,
        new.customer,
        new.token_hash,
        new.single_use,
        _dumps(new.sections),
        _dumps(new.flow) if new.flow is not None else None,
        new.return_url,
        new.locale,
        new.send_email,
        new.created_at,
        new.expires_at,
        new.event.id,
        new.event.routing_key,
        new.event.model_dump_json(),
        new.headers_json(),
        new.key_id,
    )
    assert row is not None
    return bool(row["key_live"]), row["customer_id"]


# Group commit (see ``batcher.CreateBatcher``): the statement above for many sessions at
# once, one row of arrays per column. Each input row is checked on its own (its key
# live, its customer found in its own site), so one request's revoked key or unknown
# customer writes nothing for it and does not affect the others; the whole batch is
# one statement, hence one transaction: every written session commits with its event.
# One NOTIFY per batch. The customer lookup is split by kind (two index-friendly
# branches, each switched on or off per row) rather than a CASE no index can serve.
_CREATE_MANY = f"""
WITH i AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bool[],
        $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[],
        $12::timestamptz[], $13::timestamptz[], $14::text[], $15::text[], $16::text[],
        $17::text[], $18::text[]
    ) WITH ORDINALITY AS t(session_id, site_id, customer, by_external_id, token_hash,
        single_use, sections, flow, return_url, locale, send_email, created_at,
        expires_at, event_id, routing_key, payload, headers, key_id, ord)
), k AS (
    SELECT i.ord, a.revoked_at IS NULL AND a.id IS NOT NULL AS live
    FROM i LEFT JOIN portal.api_keys a ON a.id = i.key_id AND a.site_id = i.site_id
), c AS (
    SELECT i.ord, m.id AS customer_id
    FROM i JOIN k ON k.ord = i.ord AND k.live
    CROSS JOIN LATERAL (
        SELECT f.id FROM (
            SELECT cu.id FROM mirror.customers cu
            WHERE NOT i.by_external_id AND cu.site_id = i.site_id
              AND cu.deleted_at IS NULL AND (cu.id = i.customer OR cu.stripe_id = i.customer)
            UNION ALL
            SELECT cu.id FROM mirror.customers cu
            WHERE i.by_external_id AND cu.site_id = i.site_id
              AND cu.deleted_at IS NULL AND cu.external_id = i.customer
        ) f
        ORDER BY (f.id = i.customer) DESC
        LIMIT 1
    ) m
), s AS (
    INSERT INTO portal.portal_sessions (id, site_id, customer_id, token_hash, single_use,
        sections, flow, return_url, locale, send_email, created_at, expires_at)
    SELECT i.session_id, i.site_id, c.customer_id, i.token_hash, i.single_use,
        i.sections::jsonb, i.flow::jsonb, i.return_url, i.locale, i.send_email,
        i.created_at, i.expires_at
    FROM i JOIN c ON c.ord = i.ord
    ORDER BY i.ord
    RETURNING id, customer_id
), o AS (
    INSERT INTO portal.outbox (event_id, routing_key, ordering_key, payload, headers)
    SELECT i.event_id, i.routing_key, s.id,
        jsonb_set(i.payload::jsonb, '{{data,customer_id}}', to_jsonb(s.customer_id)),
        i.headers::jsonb
    FROM s JOIN i ON i.session_id = s.id
    ORDER BY i.ord
    RETURNING 1
), n AS (
    SELECT pg_notify('{channel_name(SCHEMA)}', '') WHERE EXISTS (SELECT 1 FROM o)
)
SELECT k.ord, k.live AS key_live, c.customer_id, (SELECT count(*) FROM n) AS notified
FROM k LEFT JOIN c ON c.ord = k.ord
ORDER BY k.ord
"""  # noqa: S608 - a fixed channel name; every value is a parameter


async def create_many_with_events(
    conn: Executor, batch: Sequence[NewSession]
) -> list[tuple[bool, str | None]]:
    """``create_with_event`` for every item of ``batch`` in ONE statement (so one
    transaction and one round trip); one (key still live, customer id) per item, in
    order."""
    rows = await conn.fetch(
        _CREATE_MANY,
        [n.session_id for n in batch],
        [n.site_id for n in batch],
        [n.customer for n in batch],
        [n.by_external_id for n in batch],
        [n.token_hash for n in batch],
        [n.single_use for n in batch],
        [_dumps(n.sections) for n in batch],
        [_dumps(n.flow) if n.flow is not None else None for n in batch],
        [n.return_url for n in batch],
        [n.locale for n in batch],
        [n.send_email for n in batch],
        [n.created_at for n in batch],
        [n.expires_at for n in batch],
        [n.event.id for n in batch],
        [n.event.routing_key for n in batch],
        [n.event.model_dump_json() for n in batch],
        [n.headers_json() for n in batch],
        [n.key_id for n in batch],
    )
    if len(rows) != len(batch):
        raise RuntimeError(f"create batch of {len(batch)} answered {len(rows)} rows")
    return [(bool(r["key_live"]), r["customer_id"]) for r in rows]


async def get(conn: Executor, site_id: str, session_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_READ_COLUMNS} FROM {_READ_SOURCE} WHERE site_id = $1 AND id = $2",  # noqa: S608
        site_id,
        session_id,
    )


async def page(
    conn: Executor,
    site_id: str,
    *,
    customer_id: str | None,
    include_expired: bool,
    limit: int,
    after: tuple[datetime, str] | None,
) -> list[asyncpg.Record]:
    """Up to ``limit + 1`` sessions, newest first (the extra row tells ``has_more``).

    The WHERE clause is assembled from fixed fragments rather than ``$n IS NULL OR …``
    so each variant gets a plan that uses the (site_id[, customer_id], created_at, id)
    indexes.
    """
    where = ["site_id = $1"]
    args: list[Any] = [site_id]
    if customer_id is not None:
        args.append(customer_id)
        where.append(f"customer_id = ${len(args)}")
    if not include_expired:
        where.append("expires_at > now()")
    if after is not None:
        args.extend(after)
        where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    return await conn.fetch(
        f"SELECT {_READ_COLUMNS} FROM {_READ_SOURCE} WHERE {' AND '.join(where)} "  # noqa: S608 - fixed fragments
        f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )


# The expiry sweep's claim: sessions whose expiry passed without a revoke before it, not
# announced yet, marked announced in the same statement. ``SKIP LOCKED``: several
# replicas sweep at once, each claims rows no other holds; a row another sweeper has
# just committed is re-checked against the WHERE clause (so it is not claimed twice).
# The predicate matches portal_sessions_expiry_due_idx (portal_0002).
_CLAIM_EXPIRED = """
WITH due AS (
    SELECT id FROM portal.portal_sessions
    WHERE expires_at <= now() AND expired_event_at IS NULL
      AND (revoked_at IS NULL OR revoked_at > expires_at)
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE portal.portal_sessions p SET expired_event_at = now()
FROM due WHERE p.id = due.id
RETURNING p.id, p.site_id, p.customer_id, p.single_use, p.send_email, p.locale,
          p.return_url, p.expires_at
"""


async def claim_expired(conn: Conn, limit: int) -> list[asyncpg.Record]:
    """Up to ``limit`` sessions due a ``portal_session.expired``, marked as announced.
    Run it in the transaction that enqueues their events (both or neither)."""
    return await conn.fetch(_CLAIM_EXPIRED, limit)


async def revoke(conn: Conn, site_id: str, session_id: str) -> asyncpg.Record | None:
    """Mark the session revoked; returns the row (with ``token_hash``) only if this call
    revoked it, None if it was already revoked or does not exist."""
    return await conn.fetchrow(
        f"""
        UPDATE portal.portal_sessions SET revoked_at = now()
        WHERE site_id = $1 AND id = $2 AND revoked_at IS NULL
        RETURNING {_COLUMNS}, token_hash
        """,  # noqa: S608
        site_id,
        session_id,
    )
