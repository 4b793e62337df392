"""Tenant webhook endpoints (``notify.webhook_endpoints``) and their delivery log.

The signing secret is shown once at creation and stored AES-256-GCM-encrypted under the
notifier's data key (the endpoint id is the associated data, so a ciphertext cannot be
moved to another endpoint): the notifier must sign with it, so it cannot be a hash.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from notifier.ids import new_id
from notifier.webhooks import signing

NONCE_BYTES = 12


class SecretUnreadable(Exception):
    """The stored secret does not open with this data key (a rotated or wrong key)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    site_id: str
    url: str
    event_types: list[str]
    created_at: datetime
    removed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    delivery_id: str
    event_id: str
    event_type: str
    status: str
    attempted_at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    secret: str | None = field(default=None, repr=False)


def seal_secret(data_key: bytes, endpoint_id: str, secret: str) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(data_key).encrypt(nonce, secret.encode(), endpoint_id.encode())


def open_secret(data_key: bytes, endpoint_id: str, sealed: bytes) -> str:
    try:
        plain = AESGCM(data_key).decrypt(
            sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], endpoint_id.encode()
        )
    except (InvalidTag, ValueError):
        raise SecretUnreadable(endpoint_id) from None
    return plain.decode()


_COLUMNS = "id, site_id, url, event_types, created_at, removed_at"


async def add(
    conn: asyncpg.Connection, data_key: bytes, site_id: str, url: str, event_types: list[str]
) -> tuple[Endpoint, str]:
    """Register an endpoint; returns it and its signing secret (shown once)."""
    endpoint_id = new_id("we")
    secret = signing.new_secret()
    row = await conn.fetchrow(
        "INSERT INTO notify.webhook_endpoints (id, site_id, url, event_types, secret_sealed) "
        "VALUES ($1, $2, $3, $4, $5) RETURNING id, site_id, url, event_types, created_at, "
        "removed_at",
        endpoint_id,
        site_id,
        url,
        sorted(set(event_types)),
        seal_secret(data_key, endpoint_id, secret),
    )
    assert row is not None
    return Endpoint(**dict(row)), secret


async def listing(conn: asyncpg.Connection, site_id: str | None) -> list[Endpoint]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM notify.webhook_endpoints "  # noqa: S608 - constant columns
        "WHERE removed_at IS NULL AND ($1::text IS NULL OR site_id = $1) ORDER BY created_at",
        site_id,
    )
    return [Endpoint(**dict(row)) for row in rows]


async def remove(conn: asyncpg.Connection, endpoint_id: str) -> bool:
    status = await conn.execute(
        "UPDATE notify.webhook_endpoints SET removed_at = now() "
        "WHERE id = $1 AND removed_at IS NULL",
        endpoint_id,
    )
    return status.endswith(" 1")


async def for_delivery(
    pool: asyncpg.Pool, data_key: bytes, endpoint_id: str
) -> tuple[Endpoint, str] | None:
    """The live endpoint and its secret, or None if it was removed."""
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS}, secret_sealed FROM notify.webhook_endpoints "  # noqa: S608
        "WHERE id = $1 AND removed_at IS NULL",
        endpoint_id,
    )
    if row is None:
        return None
    values = dict(row)
    sealed = values.pop("secret_sealed")
    return Endpoint(**values), open_secret(data_key, endpoint_id, sealed)


async def log_attempt(
    pool: asyncpg.Pool,
    delivery_id: str,
    endpoint_id: str,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
) -> None:
    await pool.execute(
        "INSERT INTO notify.webhook_attempts "
        "(delivery_id, endpoint_id, status_code, error, duration_ms) VALUES ($1, $2, $3, $4, $5)",
        delivery_id,
        endpoint_id,
        status_code,
        error,
        duration_ms,
    )


async def attempts(conn: asyncpg.Connection, endpoint_id: str, limit: int) -> list[Attempt]:
    rows = await conn.fetch(
        "SELECT a.delivery_id, d.event_id, d.event_type, d.status, a.attempted_at, "
        "a.status_code, a.error, a.duration_ms FROM notify.webhook_attempts a "
        "JOIN notify.deliveries d ON d.id = a.delivery_id "
        "WHERE a.endpoint_id = $1 ORDER BY a.id DESC LIMIT $2",
        endpoint_id,
        limit,
    )
    return [Attempt(**dict(row)) for row in rows]
