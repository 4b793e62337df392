"""The dead letters operators see with ``billfold dlq``.

Two kinds, one list: deliveries that failed for good (``notify.deliveries`` with status
``dead`` and the reason: SMTP 5xx, an exhausted retry schedule, a secret that cannot be
opened) and messages the broker dead-lettered before they became deliveries (the
consumer queue's ``notifier.events.dlq``: unparseable bodies, the delivery limit).
Replaying a delivery gives it a fresh retry schedule; replaying a queued message puts
it back on the consumer queue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import aio_pika
import aio_pika.abc
import asyncpg

from notifier import deliveries
from notifier.consumer import QUEUE

DLQ = f"{QUEUE}.dlq"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    source: str  # "delivery" or "queue"
    event_type: str | None
    site_id: str | None
    channel: str | None
    attempts: int | None
    reason: str
    at: datetime | None


def _x_death_reason(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    deaths = message.headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        reason = deaths[0].get("reason")
        if isinstance(reason, bytes):
            reason = reason.decode()
        return f"broker dead-lettered ({reason})"
    return "broker dead-lettered"


def _message_id(message: aio_pika.abc.AbstractIncomingMessage) -> str:
    return message.message_id or f"msg-{message.delivery_tag}"


async def _drain(
    channel: aio_pika.abc.AbstractChannel,
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message of the DLQ, unacked: closing the channel puts back what we keep."""
    queue = await channel.get_queue(DLQ, ensure=False)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    while True:
        message = await queue.get(no_ack=False, fail=False)
        if message is None:
            return got
        got.append(message)


async def list_all(
    conn: asyncpg.Connection, amqp: aio_pika.abc.AbstractConnection, limit: int = 100
) -> list[DeadLetter]:
    found = [
        DeadLetter(
            id=d.id,
            source="delivery",
            event_type=d.event_type,
            site_id=d.site_id,
            channel=d.channel,
            attempts=d.attempts,
            reason=d.reason or "",
            at=d.dead_at,
        )
        for d in await deliveries.list_dead(conn, limit)
    ]
    channel = await amqp.channel()
    try:
        for message in await _drain(channel):
            found.append(
                DeadLetter(
                    id=_message_id(message),
                    source="queue",
                    event_type=message.type,
                    site_id=None,
                    channel=None,
                    attempts=None,
                    reason=_x_death_reason(message),
                    at=message.timestamp,
                )
            )
    finally:
        await channel.close()  # returns every message to the DLQ
    return found


async def replay(
    conn: asyncpg.Connection, amqp: aio_pika.abc.AbstractConnection, ids: list[str] | None
) -> list[str]:
    """Replay the given dead letters (``None``: all). Returns the ids replayed."""
    replayed = await deliveries.replay(conn, ids)
    wanted = None if ids is None else set(ids) - set(replayed)
    if wanted is not None and not wanted:
        return replayed
    channel = await amqp.channel(publisher_confirms=True)
    try:
        for message in await _drain(channel):
            if wanted is not None and _message_id(message) not in wanted:
                continue
            headers = {k: v for k, v in message.headers.items() if not k.startswith("x-")}
            await channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    message_id=message.message_id,
                    type=message.type,
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers=headers,
                ),
                routing_key=QUEUE,
            )
            await message.ack()
            replayed.append(_message_id(message))
    finally:
        await channel.close()
    return replayed
