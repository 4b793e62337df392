"""Group commit for session creates: concurrent creates share one statement.

Under load most of a create's cost is per statement, not per row: the round trip,
asyncpg's encode/decode, the commit (a WAL flush), the NOTIFY (which serialises
committers on the notify queue lock). :class:`CreateBatcher` collects the creates
that arrive while the loop is busy and writes up to ``max_batch`` of them with ONE
multi-row statement (``repository.create_many_with_events``), i.e. one transaction.

What a caller sees is unchanged:

* its ``create`` returns only after the statement that wrote its row AND its outbox
  event has committed (both or neither: one statement);
* its outcome is its own: each row re-checks its own API key (a key revoked before the
  statement started is refused for that request) and finds its own customer in its
  own site; a refused row writes nothing and does not affect the others;
* if the shared statement fails as a whole (which no single request should be able to
  cause), its members are retried alone, one after the other, so a failure reaches
  only the request that causes it (a database outage fails each of them, as before);
* if no pool connection comes free within the pool's acquire timeout (``BoundedPool``),
  every member of the batch gets ``PoolTimeout`` at once (a 503 with Retry-After): no
  statement ran, and retrying them one by one would only queue them longer.

Idle, a create is sent on the next loop iteration, alone. Up to ``max_in_flight``
statements run at once, each on its own pooled connection; while they do, new creates
queue up and go together in the next one.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

from billfold.db import PoolTimeout
from billfold.logs import get_logger
from session_api.dbtypes import Acquirer
from session_api.portal_sessions import repository

log = get_logger("session_api.create_batcher")

Outcome = tuple[bool, str | None]
_Item = tuple[repository.NewSession, "asyncio.Future[Outcome]"]


class CreateBatcher:
    def __init__(self, pool: Acquirer, *, max_batch: int = 64, max_in_flight: int = 2) -> None:
        self._pool = pool
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._pending: list[_Item] = []
        self._in_flight = 0
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        # For tests and operators.
        self.statements = 0
        self.rows = 0

    async def create(self, new: repository.NewSession) -> Outcome:
        """Write ``new`` (row and event); returns (key still live, customer id) like
        ``repository.create_with_event``, or raises what writing it alone would."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._pending.append((new, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and self._in_flight < self.max_in_flight:
            self._scheduled = True
            # Next iteration, so creates arriving in this one join; an empty context so
            # the statement's task does not carry the first caller's request id.
            loop.call_soon(self._dispatch, context=contextvars.Context())

    def _dispatch(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self.max_in_flight:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            self._in_flight += 1
            task = asyncio.create_task(self._write(batch), name="create-batch")
            self._tasks.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight -= 1
        if self._pending:
            self._schedule(asyncio.get_running_loop())

    async def _write(self, batch: list[_Item]) -> None:
        try:
            if len(batch) == 1:
                await self._write_alone(batch[0])
                return
            try:
                outcomes = await self._statement(batch)
            except PoolTimeout as exc:  # nothing ran: the whole batch is shed together
                for _, future in batch:
                    if not future.done():
                        future.set_exception(PoolTimeout(*exc.args))
                return
            except Exception as exc:  # retried one by one, in order: only the culprit fails
                log.warning("create_batch_failed", size=len(batch), error=type(exc).__name__)
                for item in batch:
                    await self._write_alone(item)
                return
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
        except BaseException as exc:  # cancelled (shutdown): never leave a caller hanging
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            raise

    async def _statement(self, batch: Sequence[_Item]) -> list[Outcome]:
        async with self._pool.acquire() as conn:
            outcomes = await repository.create_many_with_events(conn, [new for new, _ in batch])
        self.statements += 1
        self.rows += len(batch)
        return outcomes

    async def _write_alone(self, item: _Item) -> None:
        new, future = item
        try:
            async with self._pool.acquire() as conn:
                outcome = await repository.create_with_event(conn, new)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
            return
        self.statements += 1
        self.rows += 1
        if not future.done():
            future.set_result(outcome)

    async def close(self) -> None:
        """Wait for the statements in flight (their callers are waiting on them)."""
        while self._tasks or self._pending:
            if self._pending and not self._scheduled and self._in_flight < self.max_in_flight:
                self._dispatch()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            else:
                await asyncio.sleep(0)
