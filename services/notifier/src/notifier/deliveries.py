"""``notify.deliveries``: one row per message to send, its retry schedule and, once
dead, the dead-letter record. All of the table's SQL lives here.

Retries are scheduled in Postgres (``next_attempt_at``) and picked up by the
dispatcher, not by a consumer sleeping on a message (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from billfold.events import Event
from notifier.ids import new_id

CHANNEL = "notify_deliveries"  # pg_notify channel: "a delivery is due now"

_CLAIM = """
UPDATE notify.deliveries d
   SET attempts = d.attempts + 1, locked_until = now() + make_interval(secs => $2)
 WHERE d.id IN (
        SELECT id FROM notify.deliveries
         WHERE status = 'pending' AND next_attempt_at <= now()
           AND (locked_until IS NULL OR locked_until < now())
         ORDER BY next_attempt_at
         LIMIT $1
         FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.event_id, d.event_type, d.site_id, d.channel, d.endpoint_id, d.payload,
          d.attempts, d.created_at
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    event_id: str
    event_type: str
    site_id: str
    channel: str
    endpoint_id: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeadDelivery:
    id: str
    event_id: str
    event_type: str
    site_id: str
    channel: str
    endpoint_id: str
    attempts: int
    reason: str | None
    dead_at: datetime


def _payload(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json")


async def add_email(conn: asyncpg.Connection, event: Event) -> bool:
    """Schedule the email of ``event``; False if it was already scheduled."""
    status = await conn.execute(
        "INSERT INTO notify.deliveries (id, event_id, event_type, site_id, channel, payload) "
        "VALUES ($1, $2, $3, $4, 'email', $5) ON CONFLICT DO NOTHING",
        new_id("dlv"),
        event.id,
        event.type,
        event.site_id,
        _payload(event),
    )
    return status.endswith(" 1")


async def add_webhooks(conn: asyncpg.Connection, event: Event, payload: dict[str, Any]) -> int:
    """Schedule ``payload`` for every live endpoint of the event's site subscribed to
    its type; returns how many."""
    status = await conn.execute(
        """
        INSERT INTO notify.deliveries
            (id, event_id, event_type, site_id, channel, endpoint_id, payload)
        SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), $1, $2, $3, 'webhook', e.id, $4
          FROM notify.webhook_endpoints e
         WHERE e.site_id = $3 AND e.removed_at IS NULL
           AND (cardinality(e.event_types) = 0 OR $2 = ANY (e.event_types))
        ON CONFLICT DO NOTHING
        """,
        event.id,
        event.type,
        event.site_id,
        payload,
    )
    return int(status.rsplit(" ", 1)[1])


async def announce(conn: asyncpg.Connection) -> None:
    """Wake the dispatchers at commit."""
    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)


async def claim(pool: asyncpg.Pool, limit: int, lease: float) -> list[Delivery]:
    """Reserve up to ``limit`` due deliveries for ``lease`` seconds (counting an attempt)."""
    rows = await pool.fetch(_CLAIM, limit, lease)
    return [Delivery(**dict(row)) for row in rows]


async def next_due_in(pool: asyncpg.Pool) -> float | None:
    """Seconds until the earliest pending delivery is due (or its lease ends)."""
    value = await pool.fetchval(
        "SELECT extract(epoch FROM min(greatest(next_attempt_at, coalesce(locked_until, "
        "next_attempt_at))) - now()) FROM notify.deliveries WHERE status = 'pending'"
    )
    return None if value is None else max(0.0, float(value))


async def mark_sent(pool: asyncpg.Pool, delivery_id: str) -> None:
    await pool.execute(
        "UPDATE notify.deliveries SET status = 'sent', sent_at = now(), locked_until = NULL, "
        "last_error = NULL WHERE id = $1",
        delivery_id,
    )


async def retry_later(pool: asyncpg.Pool, delivery_id: str, delay: float, reason: str) -> None:
    await pool.execute(
        "UPDATE notify.deliveries SET next_attempt_at = now() + make_interval(secs => $2), "
        "locked_until = NULL, last_error = $3 WHERE id = $1",
        delivery_id,
        delay,
        reason,
    )


async def mark_dead(pool: asyncpg.Pool, delivery_id: str, reason: str) -> None:
    await pool.execute(
        "UPDATE notify.deliveries SET status = 'dead', dead_at = now(), locked_until = NULL, "
        "last_error = $2 WHERE id = $1",
        delivery_id,
        reason,
    )


async def list_dead(conn: asyncpg.Connection, limit: int = 100) -> list[DeadDelivery]:
    rows = await conn.fetch(
        "SELECT id, event_id, event_type, site_id, channel, endpoint_id, attempts, "
        "last_error AS reason, dead_at FROM notify.deliveries WHERE status = 'dead' "
        "ORDER BY dead_at, id LIMIT $1",
        limit,
    )
    return [DeadDelivery(**dict(row)) for row in rows]


async def replay(conn: asyncpg.Connection, delivery_ids: list[str] | None) -> list[str]:
    """Put dead deliveries back in the schedule with a fresh retry budget (``None``:
    all of them). Returns the ids replayed; announces them to the dispatchers."""
    rows = await conn.fetch(
        "UPDATE notify.deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),"
        " dead_at = NULL, locked_until = NULL "
        "WHERE status = 'dead' AND ($1::text[] IS NULL OR id = ANY ($1)) RETURNING id",
        delivery_ids,
    )
    if rows:
        await announce(conn)
    return [row["id"] for row in rows]


async def sweep(pool: asyncpg.Pool, older_than_days: float, limit: int = 5000) -> int:
    """Delete sent deliveries (and their attempt log) older than the retention period.

    Dead ones stay until an operator replays them. Deduplication does not depend on
    these rows: the consumer's ``processed_events`` keeps every event id.
    """
    status = await pool.execute(
        "DELETE FROM notify.deliveries WHERE id IN ("
        "SELECT id FROM notify.deliveries WHERE status = 'sent' "
        "AND sent_at < now() - make_interval(secs => $1) LIMIT $2)",
        older_than_days * 86400,
        limit,
    )
    return int(status.rsplit(" ", 1)[1])
