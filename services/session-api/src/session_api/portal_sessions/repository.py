"""SQL for ``portal.portal_sessions`` (every statement filters on ``site_id``)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from billfold.bus import REQUEST_ID_HEADER
from billfold.events import PortalSessionCreated
from billfold.outbox import channel_name
from session_api.dbtypes import Conn, Executor

SCHEMA = "portal"
_COLUMNS = (
    "id, customer_id, single_use, sections, flow, return_url, locale, send_email, "
    "created_at, expires_at, used_at, revoked_at"
)

# The create path in ONE statement (one round trip, atomic without BEGIN/COMMIT): find
# the customer, check the API key is still live (so callers may skip the key lookup,
# see auth.OwnerCache), insert the session row and its outbox row (the shape
# ``billfold.outbox.enqueue`` writes, with the customer id filled in from the lookup),
# and NOTIFY the relay, which Postgres delivers at commit. No customer → no row
# inserted and no row returned. enqueue's advisory lock on the ordering key is not
# needed: nothing else can produce events for a session id that does not exist yet.
_CREATE_TEMPLATE = """
WITH k AS (
    SELECT revoked_at IS NULL AS live FROM portal.api_keys WHERE id = $17 AND site_id = $2
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


async def create_with_event(
    conn: Executor,
    *,
    key_id: str,
    session_id: str,
    site_id: str,
    customer: str,
    by_external_id: bool,
    token_hash: str,
    single_use: bool,
    sections: dict[str, Any],
    flow: dict[str, Any] | None,
    return_url: str | None,
    locale: str | None,
    send_email: bool,
    created_at: datetime,
    expires_at: datetime,
    event: PortalSessionCreated,
) -> tuple[bool, str | None]:
    """Create the session for ``customer`` (Billfold/Stripe id, or external id) and its
    event. Returns (key still live, Billfold customer id); nothing is written unless
    both hold. The event's ``data.customer_id`` is set here."""
    headers = {REQUEST_ID_HEADER: event.request_id} if event.request_id else {}
    row = await conn.fetchrow(
        _CREATE_BY_EXTERNAL_ID if by_external_id else _CREATE_BY_ID,
        session_id,
        site_id,
        customer,
        token_hash,
        single_use,
        json.dumps(sections),
        json.dumps(flow) if flow is not None else None,
        return_url,
        locale,
        send_email,
        created_at,
        expires_at,
        event.id,
        event.routing_key,
        event.model_dump_json(),
        json.dumps(headers),
        key_id,
    )
    assert row is not None
    return bool(row["key_live"]), row["customer_id"]


async def get(conn: Executor, site_id: str, session_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM portal.portal_sessions WHERE site_id = $1 AND id = $2",  # noqa: S608
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
        f"SELECT {_COLUMNS} FROM portal.portal_sessions WHERE {' AND '.join(where)} "  # noqa: S608 - fixed fragments
        f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}",
        *args,
    )


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
