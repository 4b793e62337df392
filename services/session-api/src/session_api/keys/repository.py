"""SQL for ``portal.api_keys``. Keys are stored only as SHA-256 hashes plus a hint."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from billfold import tokens
from session_api.dbtypes import Conn, Executor
from session_api.ids import new_id


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    site_id: str
    kind: str
    hint: str
    scopes: list[str] | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """What authentication needs about a key and its site, in one indexed lookup."""

    key_id: str
    site_id: str
    kind: str
    scopes: frozenset[str] | None
    revoked: bool
    site_default_sections: dict[str, object]
    site_default_ttl: int | None
    site_default_locale: str
    # The site's first custom domain: links minted for the site use it.
    site_domain: str | None = None


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=row["id"],
        site_id=row["site_id"],
        kind=row["kind"],
        hint=row["hint"],
        scopes=list(row["scopes"]) if row["scopes"] is not None else None,
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


async def create(
    conn: Conn,
    site_id: str,
    kind: tokens.KeyKind,
    scopes: list[str] | None = None,
) -> tuple[ApiKey, str]:
    """A new key for the site; returns the record and the key itself (shown once)."""
    secret = tokens.generate_key(kind)
    row = await conn.fetchrow(
        """
        INSERT INTO portal.api_keys (id, site_id, kind, key_hash, hint, scopes)
        VALUES ($1, $2, $3, $4, $5, $6)
        RETURNING id, site_id, kind, hint, scopes, created_at, revoked_at
        """,
        new_id("key"),
        site_id,
        kind,
        tokens.hash_token(secret),
        tokens.hint(secret),
        scopes,
    )
    assert row is not None
    return _key(row), secret


async def list_for_site(conn: Conn, site_id: str) -> list[ApiKey]:
    rows = await conn.fetch(
        "SELECT id, site_id, kind, hint, scopes, created_at, revoked_at "
        "FROM portal.api_keys WHERE site_id = $1 ORDER BY created_at, id",
        site_id,
    )
    return [_key(r) for r in rows]


async def revoke(conn: Conn, key_id: str) -> ApiKey | None:
    """Revoke a key (keeps the first revocation time); None if there is no such key."""
    row = await conn.fetchrow(
        """
        UPDATE portal.api_keys SET revoked_at = coalesce(revoked_at, now())
        WHERE id = $1
        RETURNING id, site_id, kind, hint, scopes, created_at, revoked_at
        """,
        key_id,
    )
    return _key(row) if row else None


async def owner_by_hash(conn: Executor, key_hash: str) -> KeyOwner | None:
    row = await conn.fetchrow(
        """
        SELECT k.id, k.site_id, k.kind, k.scopes, k.revoked_at IS NOT NULL AS revoked,
               s.default_sections, s.default_session_ttl, s.default_locale,
               (SELECT d.domain FROM portal.site_domains d WHERE d.site_id = s.id
                ORDER BY d.created_at, d.domain LIMIT 1) AS site_domain
        FROM portal.api_keys k JOIN portal.sites s ON s.id = k.site_id
        WHERE k.key_hash = $1
        """,
        key_hash,
    )
    if row is None:
        return None
    return KeyOwner(
        key_id=row["id"],
        site_id=row["site_id"],
        kind=row["kind"],
        scopes=frozenset(row["scopes"]) if row["scopes"] is not None else None,
        revoked=row["revoked"],
        site_default_sections=row["default_sections"] or {},
        site_default_ttl=row["default_session_ttl"],
        site_default_locale=row["default_locale"],
        site_domain=row["site_domain"],
    )
