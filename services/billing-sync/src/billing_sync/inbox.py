"""``mirror.stripe_events``: Stripe events accepted by the webhook endpoint, to process.

Accepting an event is one INSERT (its id is the primary key, so a redelivery inserts
nothing) that also NOTIFYs the workers, delivered at commit: the event is durable before
Stripe gets its 2xx. Processing locks pending rows with ``FOR UPDATE SKIP LOCKED`` so
replicas share the work, and marks them processed in the transaction that updated the
mirror; a failure reschedules them with exponential backoff (recorded after that
transaction rolled back, on the events nobody processed meanwhile).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from billing_sync.dbtypes import Conn

CHANNEL = "billfold_stripe_events"

_RECORD = """
WITH ins AS (
    INSERT INTO mirror.stripe_events
        (id, site_id, type, object_type, object_id, stripe_created, payload)
    VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT id, pg_notify($8, '') FROM ins
"""


async def record(conn: Conn | asyncpg.Pool, site_id: str, event: dict[str, Any], raw: str) -> bool:
    """Store a verified event; False if its id was already stored (a redelivery)."""
    obj = (event.get("data") or {}).get("object") or {}
    created = event.get("created")
    row = await conn.fetchrow(
        _RECORD,
        event["id"],
        site_id,
        event["type"],
        obj.get("object") if isinstance(obj.get("object"), str) else None,
        obj.get("id") if isinstance(obj.get("id"), str) else None,
        datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None,
        raw,
        CHANNEL,
    )
    return row is not None


@dataclass(frozen=True)
class Pending:
    id: str
    site_id: str
    type: str
    attempts: int
    #: The event's ``data.object``, only what dispatch reads: ``id``, ``object`` and
    #: ``customer`` (an expanded customer reduced to its id). Postgres picks them out of
    #: the stored payload: parsing whole events in Python was a cost per event.
    obj: dict[str, Any]


async def due(conn: Conn | asyncpg.Pool, limit: int, *, exclude: list[str]) -> list[Pending]:
    """Up to ``limit`` due events (oldest first) other than ``exclude`` (the ones this
    worker holds already). Not locked: :func:`lock` takes them in the group's
    transaction, so a replica that read them too cannot process them twice."""
    rows = await conn.fetch(
        """
        SELECT id, site_id, type, attempts,
            jsonb_build_object(
                'id', payload #> '{data,object,id}',
                'object', payload #> '{data,object,object}',
                'customer', coalesce(payload #> '{data,object,customer,id}',
                                     payload #> '{data,object,customer}')
            )::text AS obj
        FROM mirror.stripe_events
        WHERE processed_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
          AND id <> ALL($2::text[])
        ORDER BY received_at, id
        LIMIT $1
        """,
        limit,
        exclude,
    )
    return [
        Pending(r["id"], r["site_id"], r["type"], r["attempts"], orjson.loads(r["obj"]))
        for r in rows
    ]


async def lock(conn: Conn, ids: list[str], object_lock: str | None) -> tuple[list[str], bool]:
    """Lock, for this transaction, those of ``ids`` still to process and not locked by
    another transaction, and if there are any, try the transaction-scoped advisory lock
    ``object_lock`` too (None: take none). Returns (the ids locked, whether the advisory
    lock was taken).
    One round trip for both: a group's fixed cost is mostly round trips."""
    row = await conn.fetchrow(
        """
        WITH locked AS (
            SELECT id FROM mirror.stripe_events
            WHERE id = ANY($1::text[]) AND processed_at IS NULL AND failed_at IS NULL
            FOR UPDATE SKIP LOCKED
        )
        SELECT array(SELECT id FROM locked) AS ids,
               CASE WHEN EXISTS (SELECT 1 FROM locked)
                    THEN pg_try_advisory_xact_lock(hashtextextended($2, 0)) END AS object_locked
        """,
        ids,
        object_lock,
    )
    assert row is not None
    return list(row["ids"]), bool(row["object_locked"])


async def done(conn: Conn, ids: list[str]) -> None:
    await conn.execute(
        "UPDATE mirror.stripe_events SET processed_at = now(), last_error = NULL "
        "WHERE id = ANY($1::text[])",
        ids,
    )


async def later(conn: Conn | asyncpg.Pool, ids: list[str], seconds: float) -> None:
    """Not this round (another worker holds the object): look again soon, no attempt."""
    await conn.execute(
        "UPDATE mirror.stripe_events "
        "SET next_attempt_at = now() + make_interval(secs => $2) "
        "WHERE id = ANY($1::text[]) AND processed_at IS NULL",
        ids,
        seconds,
    )


async def failed(
    conn: Conn | asyncpg.Pool,
    ids: list[str],
    error: str,
    *,
    base: float,
    cap: float,
    max_attempts: int,
) -> list[str]:
    """Record a failed attempt with exponential backoff (jittered); returns the ids that
    reached ``max_attempts`` and were given up on (left for reconciliation)."""
    rows = await conn.fetch(
        """
        UPDATE mirror.stripe_events SET
            attempts = attempts + 1,
            last_error = $2,
            next_attempt_at = now() + make_interval(
                secs => least($4::float8, $3::float8 * power(2, attempts)) * (0.5 + random() / 2)),
            failed_at = CASE WHEN attempts + 1 >= $5 THEN now() END
        WHERE id = ANY($1::text[]) AND processed_at IS NULL AND failed_at IS NULL
        RETURNING id, failed_at
        """,
        ids,
        error[:500],
        base,
        cap,
        max_attempts,
    )
    return [r["id"] for r in rows if r["failed_at"] is not None]


async def next_due(conn: Conn | asyncpg.Pool, *, exclude: list[str]) -> float | None:
    """Seconds until the earliest scheduled event other than ``exclude`` (the ones this
    worker holds already) is due (None: nothing pending)."""
    value = await conn.fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM mirror.stripe_events "
        "WHERE processed_at IS NULL AND failed_at IS NULL AND id <> ALL($1::text[])",
        exclude,
    )
    return None if value is None else float(value)
