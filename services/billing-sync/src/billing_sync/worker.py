"""Processing accepted Stripe events into the mirror, in the background.

* **Wake-up**: a dedicated connection LISTENs on the channel the webhook INSERT
  notifies, so processing starts right after acceptance; a safety poll (and the earliest
  scheduled retry) covers notifies missed while that connection was down.
* **Claiming**: up to ``worker_batch_size`` due events, oldest first, ``FOR UPDATE SKIP
  LOCKED``: replicas (and the ``concurrency`` runners of one replica) never take the same
  event. The claim's transaction is also the one that writes the mirror and marks the
  events processed, so an event is processed exactly when its effect committed.
* **Per customer, one at a time**: events are grouped by Stripe customer; a group runs
  under a transaction-scoped advisory lock on (account, customer). A group whose lock
  another runner holds is put back for a moment, not processed concurrently: the other
  runner's fetch may predate this event, and this one's fetch must be written after it.
* **Coalescing**: a short wait after a wake-up lets a burst accumulate; within a group,
  the same object named by many events is fetched once.
* **Failures**: the group's savepoint rolls back; its events get an attempt, a backoff
  and the (redacted) error, and after ``worker_max_attempts`` are given up (one error
  line; reconciliation repairs the mirror).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web
from prometheus_client import Counter

from billfold.db import DB_POOL
from billfold.logs import get_logger, redact_text
from billing_sync import accounts, inbox
from billing_sync.dbtypes import Conn
from billing_sync.mirror import dispatch
from billing_sync.mirror.context import SyncContext
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.state import SECRET_BOX, SETTINGS, STRIPE
from billing_sync.stripe_api import StripeGateway

log = get_logger("billing_sync.worker")

PROCESSED = Counter(
    "billfold_stripe_events_processed_total", "Stripe events processed, by outcome", ["outcome"]
)
FETCHES = Counter("billfold_stripe_fetches_total", "Objects refreshed from Stripe", ["kind"])

BUSY_RETRY = 0.2  # seconds before looking again at a group another runner holds
SAFETY_POLL = 5.0
BASE_BACKOFF = 1.0
MAX_BACKOFF = 300.0


class _Busy(Exception):
    pass


def customer_lock(account_ref: str, customer: str) -> str:
    """The advisory lock key every writer of one Stripe customer's objects takes (the
    worker with try-lock, reconciliation waiting for it)."""
    return f"billing-sync|{account_ref}|{customer}"


def _error_text(exc: BaseException) -> str:
    return redact_text(f"{type(exc).__name__}: {exc}")[:500]


class Worker:
    def __init__(
        self,
        settings: BillingSyncSettings,
        pool: asyncpg.Pool,
        gateway: StripeGateway,
        box: SecretBox,
        *,
        concurrency: int = 2,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.gateway = gateway
        self.box = box
        self.concurrency = concurrency
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self.processed_total = 0

    # --- one batch --------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim due events and process them; returns how many were claimed."""
        async with self.pool.acquire() as conn, conn.transaction():
            pending = await inbox.claim(conn, self.settings.worker_batch_size)
            if not pending:
                return 0
            groups: dict[tuple[str, str], list[inbox.Pending]] = defaultdict(list)
            for event in pending:
                obj = (event.payload.get("data") or {}).get("object") or {}
                groups[(event.site_id, dispatch.lock_key(obj))].append(event)
            for (site, key), events in groups.items():
                await self._group(conn, site, key, events)
        return len(pending)

    async def _group(self, conn: Conn, site: str, key: str, events: list[inbox.Pending]) -> None:
        ids = [e.id for e in events]
        targets: set[dispatch.Target] = set()
        for event in events:
            obj = (event.payload.get("data") or {}).get("object") or {}
            targets.update(dispatch.targets(event.type, obj))
        try:
            async with conn.transaction():  # a savepoint: a failure undoes this group only
                account = await accounts.get(conn, self.box, site)
                if account is None:
                    raise LookupError(f"site {site} has no Stripe configuration")
                locked = await conn.fetchval(
                    "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))",
                    customer_lock(account.account_ref, key),
                )
                if not locked:
                    raise _Busy
                ctx = SyncContext(conn, account, self.gateway.client(account))
                for target in sorted(targets, key=lambda t: (t.rank, t.id)):
                    FETCHES.labels(target.kind).inc()
                    await dispatch.refresh(ctx, target)
                await inbox.done(conn, ids)
        except _Busy:
            await inbox.later(conn, ids, BUSY_RETRY)
            return
        except Exception as exc:  # recorded on the events; they are retried with backoff
            error = _error_text(exc)
            gave_up = await inbox.failed(
                conn,
                ids,
                error,
                base=BASE_BACKOFF,
                cap=MAX_BACKOFF,
                max_attempts=self.settings.worker_max_attempts,
            )
            PROCESSED.labels("failed").inc(len(ids))
            log.warning(
                "stripe_events_failed",
                site=site,
                events=len(ids),
                attempt=events[0].attempts + 1,
                error=error,
            )
            if gave_up:
                log.error("stripe_events_gave_up", site=site, stripe_events=gave_up, error=error)
            return
        self.processed_total += len(ids)
        PROCESSED.labels("processed").inc(len(ids))
        log.debug("stripe_events_processed", site=site, events=len(ids), emitted=ctx.emitted)

    # --- the loop ---------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stripe-event-worker")

    async def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 15)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self._close_listener()

    @property
    def listening(self) -> bool:
        return self._listen_conn is not None and not self._listen_conn.is_closed()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(Exception):  # the safety poll covers for it
                await self._listen()
            self._wakeup.clear()
            try:
                claimed = await self._round()
            except Exception as exc:  # the database is unreachable, typically
                log.warning("stripe_worker_failed", error=_error_text(exc))
                await self._sleep(1.0)
                continue
            if claimed:
                continue
            await self._wait_for_work()

    async def _round(self) -> int:
        if self.settings.coalesce_window:
            await self._sleep(self.settings.coalesce_window)
        counts = await asyncio.gather(*(self.run_once() for _ in range(self.concurrency)))
        return sum(counts)

    async def _wait_for_work(self) -> None:
        if self._stopping.is_set():
            return
        timeout = SAFETY_POLL
        with contextlib.suppress(Exception):
            due = await inbox.next_due(self.pool)
            if due is not None:
                timeout = min(timeout, max(0.01, due))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _listen(self) -> None:
        if self.listening:
            return
        await self._close_listener()
        conn = await asyncpg.connect(self.settings.database_url, timeout=5)
        try:
            await conn.add_listener(inbox.CHANNEL, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_notify)
        self._listen_conn = conn
        self._wakeup.set()  # notifies may have been missed meanwhile

    async def _close_listener(self) -> None:
        conn, self._listen_conn = self._listen_conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()


WORKER: web.AppKey[Worker] = web.AppKey("stripe_worker", Worker)


def worker_context(concurrency: int = 2) -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry running the worker (after the pool and the gateway)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        worker = Worker(
            app[SETTINGS], app[DB_POOL], app[STRIPE], app[SECRET_BOX], concurrency=concurrency
        )
        app[WORKER] = worker
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()

    return ctx
