"""Processing accepted Stripe events into the mirror, in the background.

* **Wake-up**: a dedicated connection LISTENs on the channel the webhook INSERT
  notifies, so processing starts right after acceptance; a safety poll (and the earliest
  scheduled retry) covers notifies missed while that connection was down.
* **Dispatch**: after a short coalescing wait, the dispatcher reads up to
  ``worker_batch_size`` due events (oldest first, without locking them) that this worker
  does not hold yet, and groups them by Stripe customer. Each customer group gets a task;
  at most ``worker_concurrency`` groups are processed at once, each on its own
  connection from the worker's OWN pool, so processing can never starve webhook
  acceptance of the app's pool; and while the process is busy answering webhooks
  (``billing_sync.priority``) no more than ``worker_min_concurrency`` groups run (0 by
  default), so processing cannot starve acceptance of CPU.
* **One transaction per customer group**: the group's events are locked ``FOR UPDATE
  SKIP LOCKED`` (another replica may hold some), then the group takes a
  transaction-scoped advisory try-lock on (account, customer). If another writer holds
  that lock, the group is put back for a moment, not processed concurrently: the other
  writer's fetch may predate these events, and ours must be written after it. The mirror
  rows, the outbox events and "processed" commit together, and are visible as soon as
  that group is done (not when a whole batch is).
* **Coalescing**: events for a customer that arrive while its group is being processed
  wait for that task's next round, and within a round each object named by any number of
  events is fetched once: a burst of events for one object costs one read of Stripe.
* **Failures**: the group's savepoint rolls back; its events get an attempt, a backoff
  and the (redacted) error, and after ``worker_max_attempts`` are given up (one error
  line; reconciliation repairs the mirror).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web
from prometheus_client import Counter

from billfold import db
from billfold.logs import get_logger, redact_text
from billing_sync import accounts, inbox
from billing_sync.dbtypes import Conn
from billing_sync.mirror import dispatch
from billing_sync.mirror.context import SyncContext
from billing_sync.priority import ACCEPTANCE, AcceptanceFirst
from billing_sync.secrets import SecretBox, SecretDecryptError
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


#: (site, lock key): the events of one Stripe customer, processed one group at a time.
GroupKey = tuple[str, str]


class Worker:
    def __init__(
        self,
        settings: BillingSyncSettings,
        pool: asyncpg.Pool,
        gateway: StripeGateway,
        box: SecretBox,
        *,
        concurrency: int | None = None,
        acceptance: AcceptanceFirst | None = None,
    ) -> None:
        self.settings = settings
        self.acceptance = acceptance
        self.pool = pool
        self.gateway = gateway
        self.box = box
        self.concurrency = concurrency or settings.worker_concurrency
        self._slots = asyncio.Semaphore(self.concurrency)
        # Events read but not processed yet, per customer group; a key is present while
        # its task runs (or waits for a slot), which takes what was added meanwhile.
        self._queued: dict[GroupKey, list[inbox.Pending]] = {}
        self._held: set[str] = set()  # ids in ``_queued`` or being processed
        self._tasks: set[asyncio.Task[None]] = set()
        self._active = 0  # groups being processed (past the acceptance gate)
        self._below_minimum = asyncio.Event()  # set when a group ends
        self._accounts: dict[str, accounts.SiteAccount] = {}
        self._sites: dict[str, list[tuple[str, bool]]] = {}  # per account_ref, as _accounts
        # Backpressure: the dispatcher reads no more while this many events are held.
        self._held_cap = 10 * settings.worker_batch_size
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self.processed_total = 0

    # --- dispatch ---------------------------------------------------------------------

    async def run_once(self) -> int:
        """Read due events, process every customer group they form and wait for it;
        returns how many events were read."""
        taken = await self._dispatch()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        return taken

    async def _dispatch(self) -> int:
        """Read due events this worker does not hold yet and hand each to its customer
        group's task (started if the group has none). Returns at once."""
        room = min(self.settings.worker_batch_size, self._held_cap - len(self._held))
        if room <= 0:
            return 0
        pending = await inbox.due(self.pool, room, exclude=list(self._held))
        # Configuration changes apply from the next round on.
        self._accounts = {}
        self._sites = {}
        for event in pending:
            self._held.add(event.id)
            obj = event.obj
            key = (event.site_id, dispatch.lock_key(obj))
            queue = self._queued.get(key)
            if queue is not None:
                queue.append(event)  # coalesced into that group's next round
                continue
            self._queued[key] = [event]
            task = asyncio.create_task(self._drain(key), name=f"stripe-events-{key[1]}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(pending)

    async def _drain(self, key: GroupKey) -> None:
        """Process the group's events, round after round, until none are left."""
        try:
            async with self._slots:
                while True:
                    await self._gate()
                    events = self._queued[key]
                    if not events:
                        break
                    self._queued[key] = []
                    self._active += 1
                    try:
                        await self._group(key[0], key[1], events)
                    finally:
                        self._active -= 1
                        self._below_minimum.set()
                        self._held.difference_update(e.id for e in events)
        except Exception as exc:  # the database, typically: the events stay due
            log.warning("stripe_worker_failed", error=_error_text(exc))
        finally:
            for event in self._queued.pop(key, []):
                self._held.discard(event.id)
            if len(self._held) < self._held_cap:
                self._wakeup.set()  # the dispatcher may have stopped reading at the cap

    async def _gate(self) -> None:
        """Return when this group may start: acceptance is not busy, or fewer than
        ``worker_min_concurrency`` groups are running (whichever comes first)."""
        acceptance = self.acceptance
        if acceptance is None:
            return
        while self._active >= self.settings.worker_min_concurrency and acceptance.busy:
            self._below_minimum.clear()
            waits = {
                asyncio.ensure_future(acceptance.wait_clear()),
                asyncio.ensure_future(self._below_minimum.wait()),
            }
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()

    # --- one customer group -----------------------------------------------------------

    async def _account(self, conn: Conn, site: str) -> accounts.SiteAccount | None:
        """The site's Stripe configuration, read once per dispatch round (shared by the
        round's groups: one query and one decryption instead of one per group; the sites
        sharing its Stripe account likewise, ``_sites``)."""
        account = self._accounts.get(site)
        if account is None:
            account = await accounts.get(conn, self.box, site)
            if account is not None:
                self._accounts[site] = account
        return account

    async def _group(self, site: str, key: str, events: list[inbox.Pending]) -> None:
        """One transaction: lock the events, take the customer's lock, refresh what they
        name from Stripe, write the mirror, mark them processed. On failure it rolls back
        whole and the attempt is recorded afterwards (no savepoint: two round trips less
        per group, and a group is all or nothing anyway)."""
        ids: list[str] = []
        emitted: list[str] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                # A site whose secrets do not decrypt (another key, a moved row) fails
                # its own events, recorded with backoff once they are locked below; raised
                # here, nothing would be locked, the events would stay due and be taken
                # again at once, round after round, starving every other site's groups.
                account: accounts.SiteAccount | None = None
                unusable: SecretDecryptError | None = None
                try:
                    account = await self._account(conn, site)
                except SecretDecryptError as exc:
                    unusable = exc
                ids, locked = await inbox.lock(
                    conn,
                    [e.id for e in events],
                    customer_lock(account.account_ref, key) if account else None,
                )
                if not ids:
                    return  # another replica has (or had) them
                if unusable is not None:
                    raise unusable
                if account is None:  # recorded on the locked events, retried with backoff
                    raise LookupError(f"site {site} has no Stripe configuration")
                if not locked:
                    raise _Busy
                locked_ids = set(ids)
                targets: set[dispatch.Target] = set()
                for event in events:
                    if event.id in locked_ids:
                        obj = event.obj
                        targets.update(dispatch.targets(event.type, obj))
                ctx = SyncContext(
                    conn,
                    account,
                    self.gateway.client(account),
                    shared_sites=self._sites.get(account.account_ref),
                )
                for target in sorted(targets, key=lambda t: (t.rank, t.id)):
                    FETCHES.labels(target.kind).inc()
                    await dispatch.refresh(ctx, target)
                await inbox.done(conn, ids)
                emitted = ctx.emitted
                if ctx.shared_sites is not None:
                    self._sites[account.account_ref] = ctx.shared_sites
        except _Busy:
            await inbox.later(self.pool, ids, BUSY_RETRY)
            return
        except Exception as exc:  # recorded on the events; they are retried with backoff
            if not ids:
                raise  # nothing was locked (the database, typically): they stay due
            error = _error_text(exc)
            gave_up = await inbox.failed(
                self.pool,
                ids,
                error,
                base=BASE_BACKOFF,
                cap=MAX_BACKOFF,
                max_attempts=self.settings.worker_max_attempts,
            )
            PROCESSED.labels("failed").inc(len(ids))
            attempts = max((e.attempts for e in events if e.id in set(ids)), default=0)
            log.warning(
                "stripe_events_failed",
                site=site,
                events=len(ids),
                attempt=attempts + 1,
                error=error,
            )
            if gave_up:
                log.error("stripe_events_gave_up", site=site, stripe_events=gave_up, error=error)
            return
        self.processed_total += len(ids)
        PROCESSED.labels("processed").inc(len(ids))
        log.debug("stripe_events_processed", site=site, events=len(ids), emitted=emitted)

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
        # Groups being processed finish (their transactions commit or roll back whole).
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=15)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        await self._close_listener()

    @property
    def listening(self) -> bool:
        return self._listen_conn is not None and not self._listen_conn.is_closed()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(Exception):  # the safety poll covers for it
                await self._listen()
            self._wakeup.clear()
            if self.settings.coalesce_window:
                await self._sleep(self.settings.coalesce_window)
            try:
                taken = await self._dispatch()
            except Exception as exc:  # the database is unreachable, typically
                log.warning("stripe_worker_failed", error=_error_text(exc))
                await self._sleep(1.0)
                continue
            if taken:
                continue
            await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        if self._stopping.is_set():
            return
        timeout = SAFETY_POLL
        with contextlib.suppress(Exception):
            due = await inbox.next_due(self.pool, exclude=list(self._held))
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


def worker_context() -> Callable[[web.Application], AsyncIterator[None]]:
    """An ``app.cleanup_ctx`` entry running the worker (after the gateway), on a
    connection pool of its own: one connection per concurrent group, one to dispatch."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        size = settings.worker_concurrency + 1
        pool = await db.create_pool(settings, min_size=1, max_size=size)
        try:
            worker = Worker(
                settings, pool, app[STRIPE], app[SECRET_BOX], acceptance=app[ACCEPTANCE]
            )
            app[WORKER] = worker
            await worker.start()
            try:
                yield
            finally:
                await worker.stop()
        finally:
            await pool.close()

    return ctx
