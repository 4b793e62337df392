"""SQL for ``portal.sites``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from session_api.dbtypes import Conn
from session_api.ids import new_id

_COLUMNS = (
    "id, slug, name, logo_url, primary_color, accent_color, support_email, default_locale, "
    "default_sections, frame_ancestors, default_session_ttl, sign_in_ttl, "
    "account_label_fields, created_at"
)


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    slug: str
    name: str
    logo_url: str | None
    primary_color: str | None
    accent_color: str | None
    support_email: str | None
    default_locale: str
    default_sections: dict[str, Any]
    frame_ancestors: list[str]
    default_session_ttl: int | None
    sign_in_ttl: int
    account_label_fields: list[str]
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Site:
        return cls(
            **{
                k: row[k]
                for k in cls.__dataclass_fields__
                if k not in ("frame_ancestors", "account_label_fields")
            },
            frame_ancestors=list(row["frame_ancestors"]),
            account_label_fields=list(row["account_label_fields"]),
        )


class SlugTaken(Exception):
    pass


async def create(
    conn: Conn,
    *,
    slug: str,
    name: str,
    logo_url: str | None = None,
    primary_color: str | None = None,
    accent_color: str | None = None,
    support_email: str | None = None,
    default_locale: str = "en",
    frame_ancestors: list[str] | None = None,
    default_session_ttl: int | None = None,
) -> Site:
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO portal.sites (id, slug, name, logo_url, primary_color, accent_color,
                support_email, default_locale, frame_ancestors, default_session_ttl)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
            RETURNING {_COLUMNS}
            """,  # noqa: S608 - constant column list
            new_id("site"),
            slug,
            name,
            logo_url,
            primary_color,
            accent_color,
            support_email,
            default_locale,
            frame_ancestors or [],
            default_session_ttl,
        )
    except asyncpg.UniqueViolationError as exc:
        raise SlugTaken(slug) from exc
    assert row is not None
    return Site.from_row(row)


async def ensure(conn: Conn, *, slug: str, name: str) -> Site:
    """The site with this slug, created if missing (safe under concurrent callers)."""
    await conn.execute(
        "INSERT INTO portal.sites (id, slug, name) VALUES ($1, $2, $3) "
        "ON CONFLICT (slug) DO NOTHING",
        new_id("site"),
        slug,
        name,
    )
    site = await get_by_slug(conn, slug)
    assert site is not None
    return site


async def get_by_slug(conn: Conn, slug: str) -> Site | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM portal.sites WHERE slug = $1",  # noqa: S608
        slug,
    )
    return Site.from_row(row) if row else None


async def list_all(conn: Conn) -> list[Site]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM portal.sites ORDER BY created_at, id"  # noqa: S608
    )
    return [Site.from_row(r) for r in rows]


# What the chooser may label an account with: columns of mirror.customers.
ACCOUNT_LABEL_FIELDS = ("name", "email", "external_id", "stripe_id")


async def update_sign_in(
    conn: Conn,
    site_id: str,
    *,
    sign_in_ttl: int | None = None,
    account_label_fields: list[str] | None = None,
) -> Site:
    """Change a site's sign-in settings; ``None`` leaves a setting as it is."""
    row = await conn.fetchrow(
        f"""
        UPDATE portal.sites SET sign_in_ttl = COALESCE($2, sign_in_ttl),
            account_label_fields = COALESCE($3, account_label_fields), updated_at = now()
        WHERE id = $1
        RETURNING {_COLUMNS}
        """,  # noqa: S608 - constant column list
        site_id,
        sign_in_ttl,
        account_label_fields,
    )
    assert row is not None
    return Site.from_row(row)


# --- custom domains (portal.site_domains): the hosts portal-web answers on for a site --


class DomainTaken(Exception):
    def __init__(self, domain: str, site_id: str) -> None:
        super().__init__(domain)
        self.site_id = site_id


async def add_domain(conn: Conn, site_id: str, domain: str) -> None:
    """Add ``domain`` to the site (adding it again to the same site is a no-op);
    ``DomainTaken`` if another site has it."""
    owner = await conn.fetchval(
        "INSERT INTO portal.site_domains (domain, site_id) VALUES ($1, $2) "
        "ON CONFLICT (domain) DO UPDATE SET domain = EXCLUDED.domain RETURNING site_id",
        domain,
        site_id,
    )
    if owner != site_id:
        raise DomainTaken(domain, owner)


async def remove_domain(conn: Conn, domain: str) -> bool:
    status = await conn.execute("DELETE FROM portal.site_domains WHERE domain = $1", domain)
    return bool(status.endswith(" 1"))


async def domains(conn: Conn, site_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT domain FROM portal.site_domains WHERE site_id = $1 ORDER BY created_at, domain",
        site_id,
    )
    return [r["domain"] for r in rows]
