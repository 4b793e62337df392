"""Reads of ``mirror.customers`` (always within one site), plus a test helper's upsert.

The mirror belongs to billing-sync; session-api only reads it. ``upsert`` is called by
no service code (``billfold demo`` no longer uses it): only session-api's and
portal-web's tests, which stand in for billing-sync with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from session_api.dbtypes import Conn, Executor
from session_api.ids import new_id


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    site_id: str
    stripe_id: str | None
    external_id: str | None
    email: str | None
    name: str | None
    created_at: datetime


_COLUMNS = "id, site_id, stripe_id, external_id, email, name, created_at"


def _customer(row: asyncpg.Record) -> Customer:
    return Customer(**{k: row[k] for k in Customer.__dataclass_fields__})


async def find(conn: Executor, site_id: str, ident: str) -> Customer | None:
    """One live customer of the site by Billfold id, Stripe id or external id (an exact
    Billfold id wins, then a Stripe id, then an external id)."""
    row = await conn.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM mirror.customers
        WHERE site_id = $1 AND deleted_at IS NULL
          AND (id = $2 OR stripe_id = $2 OR external_id = $2)
        ORDER BY (id = $2) DESC, (stripe_id IS NOT DISTINCT FROM $2) DESC
        LIMIT 1
        """,  # noqa: S608 - constant column list
        site_id,
        ident,
    )
    return _customer(row) if row else None


async def upsert(
    conn: Conn,
    site_id: str,
    *,
    external_id: str,
    email: str,
    name: str,
    stripe_id: str | None = None,
) -> Customer:
    """Insert or refresh the customer with this external id (idempotent)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO mirror.customers (id, site_id, external_id, stripe_id, email, name)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (site_id, external_id) DO UPDATE
            SET email = EXCLUDED.email, name = EXCLUDED.name,
                stripe_id = coalesce(mirror.customers.stripe_id, EXCLUDED.stripe_id),
                deleted_at = NULL, updated_at = now()
        RETURNING {_COLUMNS}
        """,  # noqa: S608
        new_id("cu"),
        site_id,
        external_id,
        stripe_id,
        email,
        name,
    )
    assert row is not None
    return _customer(row)
