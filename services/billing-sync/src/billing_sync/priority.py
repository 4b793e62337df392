"""Webhook acceptance goes before processing, inside one billing-sync process.

Accepting a webhook and processing events share one event loop and so one CPU: with the
CPU short, processing's many small database and Stripe round trips would take turns with
acceptance, and Stripe would see slow answers (and time out, and redeliver). Acceptance is
what must never wait: an accepted event is durable, processing may lag. So the webhook
handler counts the deliveries it is answering, and while more than ``limit`` of them are
in flight the worker runs no more than ``worker_min_concurrency`` customer groups (0 by
default; more keeps processing advancing when the CPU is so short that acceptance is
never idle, at a cost to acceptance throughput); full concurrency resumes as soon as
acceptance has caught up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


class AcceptanceFirst:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._clear = asyncio.Event()
        self._clear.set()

    @contextmanager
    def accepting(self) -> Iterator[None]:
        """Around answering one webhook delivery."""
        self.in_flight += 1
        if self.in_flight > self.limit:
            self._clear.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight <= self.limit:
                self._clear.set()

    @property
    def busy(self) -> bool:
        return not self._clear.is_set()

    async def wait_clear(self) -> None:
        """Return once acceptance is not busy (at once, usually)."""
        await self._clear.wait()


ACCEPTANCE: web.AppKey[AcceptanceFirst] = web.AppKey("acceptance_first", AcceptanceFirst)
