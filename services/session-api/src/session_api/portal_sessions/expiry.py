"""``portal_session.expired``: announcing sessions whose expiry passed.

Nothing happens at the moment a session expires (its status is derived from
``expires_at``), so a sweeper looks for them every ``expiry_sweep_interval`` seconds
and, for each, marks it (``expired_event_at``) and enqueues the event in ONE
transaction: a session is announced exactly once, whatever the number of replicas
sweeping at the same time (they claim with ``FOR UPDATE SKIP LOCKED``, see
``repository.claim_expired``), and a crash between the two writes loses neither.

Which sessions: every session whose expiry passed without a revoke before it. A
session that was used (its link exchanged for a browser session) is announced too: the
portal session expired either way, and its browser session ends with it. A session
revoked before it expired is not: ``portal_session.revoked`` was its end. One revoked
after its expiry (but before a sweep saw it) is still announced: it did expire first.
"""

from __future__ import annotations

from typing import cast

import asyncpg

from billfold import outbox
from billfold.events import PortalSessionData, PortalSessionExpired
from session_api.dbtypes import Acquirer, Conn
from session_api.portal_sessions import repository

BATCH = 100


async def announce(conn: Conn, limit: int = BATCH) -> list[str]:
    """Claim up to ``limit`` expired sessions and enqueue their events, in the caller's
    transaction. Returns the ids announced."""
    rows = await repository.claim_expired(conn, limit)
    for row in rows:
        event = PortalSessionExpired(
            site_id=row["site_id"],
            data=PortalSessionData(
                session_id=row["id"],
                customer_id=row["customer_id"],
                expires_at=row["expires_at"],
                single_use=row["single_use"],
                send_email=row["send_email"],
                locale=row["locale"],
                return_url=row["return_url"],
                at=row["expires_at"],
            ),
        )
        # After the row's UPDATE (its lock): the key's events keep commit order.
        await outbox.enqueue(
            cast(asyncpg.Connection, conn), repository.SCHEMA, event, ordering_key=row["id"]
        )
    return [row["id"] for row in rows]


async def sweep(pool: Acquirer, batch: int = BATCH) -> int:
    """Announce every session due now, ``batch`` per transaction (short row locks);
    returns how many this caller announced."""
    total = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            done = len(await announce(conn, batch))
        total += done
        if done < batch:
            return total
