"""What the notifier reads from other services' schemas (plain SELECTs, DESIGN.md):
the site's branding (``portal.sites``), the recipient (``mirror.customers``), and its
own per-site sender (``notify.senders``)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    slug: str
    name: str
    logo_url: str | None
    primary_color: str | None
    support_email: str | None
    default_locale: str
    from_address: str | None
    from_name: str | None


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    email: str | None
    name: str | None


async def site(conn: asyncpg.Connection | asyncpg.Pool, site_id: str) -> Site | None:
    row = await conn.fetchrow(
        "SELECT s.id, s.slug, s.name, s.logo_url, s.primary_color, s.support_email, "
        "s.default_locale, n.from_address, n.from_name "
        "FROM portal.sites s LEFT JOIN notify.senders n ON n.site_id = s.id WHERE s.id = $1",
        site_id,
    )
    return None if row is None else Site(**dict(row))


async def find_site(conn: asyncpg.Connection, ref: str) -> Site | None:
    """A site by id (``site_…``) or slug, for the CLI."""
    site_id = await conn.fetchval(
        "SELECT id FROM portal.sites WHERE id = $1 OR slug = $1 LIMIT 1", ref
    )
    return None if site_id is None else await site(conn, site_id)


async def customer(
    conn: asyncpg.Connection | asyncpg.Pool, site_id: str, customer_id: str
) -> Customer | None:
    row = await conn.fetchrow(
        "SELECT id, email, name FROM mirror.customers "
        "WHERE site_id = $1 AND id = $2 AND deleted_at IS NULL",
        site_id,
        customer_id,
    )
    return None if row is None else Customer(**dict(row))


async def set_sender(
    conn: asyncpg.Connection, site_id: str, address: str, name: str | None
) -> None:
    await conn.execute(
        "INSERT INTO notify.senders (site_id, from_address, from_name) VALUES ($1, $2, $3) "
        "ON CONFLICT (site_id) DO UPDATE SET from_address = $2, from_name = $3, "
        "updated_at = now()",
        site_id,
        address,
        name,
    )
