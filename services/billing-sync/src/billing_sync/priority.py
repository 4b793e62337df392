"""Webhook acceptance goes before processing, inside one billing-sync process.

Accepting a webhook and processing events share one event loop and so one CPU: with the
CPU short, processing's many small database and Stripe round trips would take turns with
acceptance, and Stripe would see slow answers (and time out, and redeliver). Acceptance is
what must never wait: an accepted event is durable, processing may lag. So the webhook
handler counts the deliveries it is answering, and while more than ``limit`` of them are
in flight the worker runs no more than ``worker_min_concurrency`` customer groups (0 by
default; more keeps processing advancing when the CPU is so short that acceptance is
never idle, at a cost to acceptance throughput); full concurrency resumes once
acceptance has stayed caught up for ``hold`` seconds. The hold is what makes a burst
acceptance's alone: the count only sees deliveries inside the handler (those still in
socket buffers are invisible), so it dips below the limit between waves of one burst,
and each dip let groups start whose Stripe fetches and transactions then took turns with
the next wave (measured: acceptance at 0.39 of the bare handler without the hold). A
steady 200/s keeps far fewer than ``limit`` in flight, so it never triggers the hold.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


class AcceptanceFirst:
    def __init__(self, limit: int, hold: float = 0.0) -> None:
        self.limit = limit
        self.hold = hold
        self.in_flight = 0
        self._clear = asyncio.Event()
        self._clear.set()
        # When acceptance was last over the limit (loop time); -inf: never.
        self._last_busy = float("-inf")

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
            if self.in_flight <= self.limit and not self._clear.is_set():
                self._last_busy = asyncio.get_running_loop().time()
                self._clear.set()

    def _held_for(self) -> float:
        """Seconds the hold still lasts after the last busy spell (<= 0: over)."""
        if self.hold <= 0:
            return 0.0
        return self._last_busy + self.hold - asyncio.get_running_loop().time()

    @property
    def busy(self) -> bool:
        return not self._clear.is_set() or self._held_for() > 0

    async def wait_clear(self) -> None:
        """Return once acceptance is not busy and has not been for ``hold`` seconds (at
        once, usually)."""
        while True:
            await self._clear.wait()
            remaining = self._held_for()
            if remaining <= 0:
                return
            await asyncio.sleep(remaining)


ACCEPTANCE: web.AppKey[AcceptanceFirst] = web.AppKey("acceptance_first", AcceptanceFirst)
