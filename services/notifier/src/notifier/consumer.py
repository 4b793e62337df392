"""The bus consumer: each event becomes delivery rows, in the transaction that also
records the event id (``billfold.bus``), so a redelivered event schedules nothing twice.
Sending happens later, in the dispatcher."""

from __future__ import annotations

from typing import Any

import asyncpg

from billfold.events import EVENT_TYPES, Event, LoginCodeRequested, PortalSessionCreated
from notifier import deliveries

QUEUE = "notifier.events"
CONSUMER = "notifier"
ROUTING_KEYS = list(EVENT_TYPES)
# Internal to Billfold: carries an email address and a sealed code, not a tenant's business.
NOT_FOR_WEBHOOKS = frozenset({"login.code_requested"})
# Sealed secrets are for the notifier alone; tenants never receive them.
SEALED_FIELDS = ("sealed_link", "sealed_code")


def wants_email(event: Event) -> bool:
    if isinstance(event, PortalSessionCreated):
        return event.data.send_email
    return isinstance(event, LoginCodeRequested)


def webhook_payload(event: Event) -> dict[str, Any]:
    body = event.model_dump(mode="json")
    data = body.get("data")
    if isinstance(data, dict):
        for name in SEALED_FIELDS:
            data.pop(name, None)
    return body


async def handle(event: Event, conn: asyncpg.Connection) -> None:
    scheduled = False
    if wants_email(event):
        scheduled = await deliveries.add_email(conn, event) or scheduled
    if event.type not in NOT_FOR_WEBHOOKS:
        scheduled = await deliveries.add_webhooks(conn, event, webhook_payload(event)) > 0 or (
            scheduled
        )
    if scheduled:
        await deliveries.announce(conn)
