"""What caller and server agree on besides the models: queue, headers, deadlines."""

from __future__ import annotations

import time

import aio_pika.abc

# The one queue billing-sync serves; every replica consumes it.
BILLING_QUEUE = "billfold.rpc.billing"
# RabbitMQ's direct reply-to pseudo-queue: replies go straight to the caller's channel,
# no reply queue is declared per client or per call.
REPLY_TO = "amq.rabbitmq.reply-to"
CONTENT_TYPE = "application/json"
# When the caller gives up, in Unix milliseconds (wall clock: it crosses processes).
DEADLINE_HEADER = "x-deadline"


def deadline_header(deadline: float) -> int:
    """``deadline`` (Unix seconds) as the header's value."""
    return int(deadline * 1000)


def read_deadline(headers: aio_pika.abc.HeadersType) -> float | None:
    """The request's deadline in Unix seconds, or None if missing or not a number."""
    value = headers.get(DEADLINE_HEADER)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value / 1000


def now() -> float:
    return time.time()
