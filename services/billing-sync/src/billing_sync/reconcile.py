"""Backfill and reconciliation: make the mirror equal to Stripe by listing, not by events.

Webhooks can be lost (an endpoint disabled or misconfigured for a while, events given
up after too many failures) and a newly configured site has no history. Both are
repaired the same way: list every customer of the site's Stripe account, and for each,
under the same per-customer advisory lock the worker takes, refresh the customer and
list its payment methods, subscriptions and invoices, fetched after the lock was taken
(so a concurrent webhook refresh can never be overwritten by an older listing). Rows
the mirror shows that Stripe no longer lists (a customer deleted, a card detached, a
draft deleted while its event was lost) are refreshed one by one, which marks them.

``billfold sync --site S`` runs it once with a progress line; every replica runs
:class:`Reconciler`, which claims one due account at a time (``reconciled_at`` older
than ``reconcile_interval``, ``FOR UPDATE SKIP LOCKED``), so replicas share the work and
a newly configured site is backfilled on the next check. The same loop sweeps processed
Stripe events past ``stripe_events_retention_days``, and answered RPC calls past
``rpc.retention.RPC_CALLS_RETENTION``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter as Tally
from collections.abc import AsyncIterator, Callable

import asyncpg
import stripe
from aiohttp import web

from billfold.db import DB_POOL
from billfold.logs import get_logger, redact_text
from billing_sync import accounts
from billing_sync.mirror import customers, invoices, payment_methods, subscriptions
from billing_sync.mirror.context import SyncContext
from billing_sync.rpc.retention import purge_rpc_calls
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.state import SECRET_BOX, SETTINGS, STRIPE
from billing_sync.stripe_api import StripeGateway
from billing_sync.worker import customer_lock

log = get_logger("billing_sync.reconcile")

Progress = Callable[[Tally[str]], None]
CHECK_EVERY = 30.0
LIST_EXPAND = [f"data.{path}" for path in subscriptions.EXPAND]


async def _customer(
    pool: asyncpg.Pool,
    account: accounts.SiteAccount,
    client: stripe.StripeClient,
    stripe_id: str,
    tally: Tally[str],
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            customer_lock(account.account_ref, stripe_id),
        )
        ctx = SyncContext(conn, account, client)
        ref = await customers.refresh(ctx, stripe_id)
        tally["customers"] += 1
        if ref is None or ref.deleted:
            return
        listed: set[str] = set()
        pms = await client.v1.customers.payment_methods.list_async(stripe_id, params={"limit": 100})
        async for pm in pms.auto_paging_iter():
            listed.add(pm.id)
            await payment_methods.apply(ctx, pm)
            tally["payment_methods"] += 1
        for row in await conn.fetch(
            "SELECT stripe_id FROM mirror.payment_methods "
            "WHERE customer_id = $1 AND detached_at IS NULL",
            ref.id,
        ):
            if row["stripe_id"] not in listed:
                await payment_methods.refresh(ctx, row["stripe_id"])
        subs = await client.v1.subscriptions.list_async(
            params={"customer": stripe_id, "status": "all", "limit": 100, "expand": LIST_EXPAND}
        )
        async for sub in subs.auto_paging_iter():
            await subscriptions.apply(ctx, sub)
            tally["subscriptions"] += 1
        listed.clear()
        invs = await client.v1.invoices.list_async(params={"customer": stripe_id, "limit": 100})
        async for inv in invs.auto_paging_iter():
            listed.add(str(inv.id))
            await invoices.apply(ctx, inv)
            tally["invoices"] += 1
        for row in await conn.fetch(
            "SELECT stripe_id FROM mirror.invoices WHERE customer_id = $1 AND deleted_at IS NULL",
            ref.id,
        ):
            if row["stripe_id"] not in listed:
                await invoices.refresh(ctx, row["stripe_id"])


async def reconcile_site(
    pool: asyncpg.Pool,
    gateway: StripeGateway,
    box: SecretBox,
    site_id: str,
    *,
    progress: Progress | None = None,
) -> Tally[str]:
    """Bring the mirror of ``site_id``'s Stripe account (every site sharing it) in line
    with Stripe; returns what was looked at, per kind."""
    async with pool.acquire() as conn:
        account = await accounts.get(conn, box, site_id)
    if account is None:
        raise LookupError(f"site {site_id} has no Stripe configuration")
    client = gateway.client(account)
    tally: Tally[str] = Tally()
    seen: set[str] = set()
    page = await client.v1.customers.list_async(params={"limit": 100})
    async for customer in page.auto_paging_iter():
        seen.add(customer.id)
        await _customer(pool, account, client, customer.id, tally)
        if progress is not None:
            progress(tally)
    sites = [site for site, _ in await accounts.sites_of(pool, account.account_ref)]
    gone = await pool.fetch(
        "SELECT stripe_id FROM mirror.customers WHERE site_id = ANY($1::text[]) "
        "AND stripe_id IS NOT NULL AND deleted_at IS NULL",
        sites or [site_id],
    )
    for row in gone:
        if row["stripe_id"] not in seen:
            await _customer(pool, account, client, row["stripe_id"], tally)
    if progress is not None:
        progress(tally)
    return tally


class Reconciler:
    """Each replica's periodic pass; one account at a time, claimed so replicas share."""

    def __init__(
        self,
        settings: BillingSyncSettings,
        pool: asyncpg.Pool,
        gateway: StripeGateway,
        box: SecretBox,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.gateway = gateway
        self.box = box
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.runs = 0

    async def claim(self) -> str | None:
        """A due account's default site, marked as reconciled now (so no other replica
        takes it this interval); None if none is due."""
        site: str | None = await self.pool.fetchval(
            """
            UPDATE mirror.stripe_accounts SET reconciled_at = now()
            WHERE site_id = (
                SELECT site_id FROM mirror.stripe_accounts
                WHERE is_default AND coalesce(reconciled_at, '-infinity')
                      < now() - make_interval(secs => $1)
                ORDER BY reconciled_at NULLS FIRST
                LIMIT 1
                FOR UPDATE SKIP LOCKED
            )
            RETURNING site_id
            """,
            self.settings.reconcile_interval,
        )
        return site

    async def run_due(self) -> int:
        """Reconcile every due account once; returns how many."""
        done = 0
        while not self._stopping.is_set() and (site := await self.claim()) is not None:
            try:
                tally = await reconcile_site(self.pool, self.gateway, self.box, site)
                log.info("stripe_reconciled", site=site, **dict(tally))
            except Exception as exc:  # the next interval tries again
                log.warning(
                    "stripe_reconcile_failed",
                    site=site,
                    error=redact_text(f"{type(exc).__name__}: {exc}")[:300],
                )
            done += 1
            self.runs += 1
        return done

    async def sweep(self) -> int:
        """Delete processed Stripe events past their retention, a batch at a time (given-up
        ones stay for whoever investigates); returns how many went."""
        total = 0
        while True:
            deleted = await self.pool.fetchval(
                """
                WITH gone AS (
                    DELETE FROM mirror.stripe_events WHERE id IN (
                        SELECT id FROM mirror.stripe_events
                        WHERE processed_at < now() - make_interval(days => $1)
                        LIMIT 1000
                    ) RETURNING 1
                ) SELECT count(*) FROM gone
                """,
                self.settings.stripe_events_retention_days,
            )
            total += int(deleted)
            if deleted < 1000 or self._stopping.is_set():
                return total

    async def _run(self) -> None:
        every = min(CHECK_EVERY, self.settings.reconcile_interval)
        while not self._stopping.is_set():
            try:
                await self.run_due()
                swept = await self.sweep()
                if swept:
                    log.info("stripe_events_swept", deleted=swept)
                # RPC replies past their retry window (billing_sync.rpc.retention).
                if purged := await purge_rpc_calls(self.pool):
                    log.info("rpc_calls_purged", deleted=purged)
            except Exception as exc:  # the database is unreachable, typically
                log.warning("stripe_reconcile_loop_failed", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), every)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="stripe-reconciler")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 30)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task


def reconciler_context(app: web.Application) -> AsyncIterator[None]:
    """An ``app.cleanup_ctx`` entry running the periodic reconciliation."""

    async def ctx() -> AsyncIterator[None]:
        reconciler = Reconciler(app[SETTINGS], app[DB_POOL], app[STRIPE], app[SECRET_BOX])
        await reconciler.start()
        try:
            yield
        finally:
            await reconciler.stop()

    return ctx()
