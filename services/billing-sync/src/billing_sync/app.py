"""The billing-sync aiohttp application: Stripe webhooks in, the worker, health."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from billfold import bus, db, outbox
from billfold.http import malformed
from billfold.http.health import add_health_routes
from billfold.http.middlewares import standard_middlewares
from billfold.rpc import BILLING_QUEUE, RPC_SERVER
from billing_sync import rpc, webhooks
from billing_sync.priority import ACCEPTANCE, AcceptanceFirst
from billing_sync.reconcile import reconciler_context
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.state import SECRET_BOX, SETTINGS, STRIPE, WEBHOOK_ACCOUNTS
from billing_sync.stripe_api import StripeGateway
from billing_sync.webhook_accounts import WebhookAccounts
from billing_sync.worker import worker_context

SERVICE = "billing-sync"
# Stripe events can be far larger than an API request (an invoice with many lines).
WEBHOOK_MAX_BYTES = 1024 * 1024


async def _check_postgres(app: web.Application) -> None:
    await db.check(app[db.DB_POOL])


async def _check_rabbitmq(app: web.Application) -> None:
    await app[bus.BUS].check()


async def _check_rpc(app: web.Application) -> None:
    await app[RPC_SERVER].check()


async def _stripe_gateway(app: web.Application) -> AsyncIterator[None]:
    gateway = StripeGateway(app[SETTINGS])
    app[STRIPE] = gateway
    yield
    await gateway.close()


def quiet_stripe_library() -> None:
    """The stripe library logs every request and response at INFO (URLs with object
    ids): one worker refresh would be a dozen lines. Its warnings still come through."""
    logging.getLogger("stripe").setLevel(logging.WARNING)


def create_app(
    settings: BillingSyncSettings,
    *,
    worker: bool = True,
    reconcile: bool = True,
    rpc_queue: str = BILLING_QUEUE,
) -> web.Application:
    """The app. ``worker=False`` serves webhooks without processing them, and
    ``reconcile=False`` runs no periodic reconciliation: for tests that drive
    :class:`~billing_sync.worker.Worker` or :class:`~billing_sync.reconcile.Reconciler`
    themselves. ``rpc_queue``: the RPC call queue served (tests give each app its own)."""
    body_limit = max(settings.max_body_bytes, WEBHOOK_MAX_BYTES)
    app = web.Application(
        middlewares=standard_middlewares(SERVICE, body_limit, settings.trusted_proxy_networks),
        client_max_size=body_limit,
    )
    malformed.install(app)
    quiet_stripe_library()
    app[SETTINGS] = settings
    app[SECRET_BOX] = SecretBox(settings.secrets_key_bytes())
    app[WEBHOOK_ACCOUNTS] = WebhookAccounts(app[SECRET_BOX], settings.webhook_account_ttl)
    app[ACCEPTANCE] = AcceptanceFirst(settings.worker_yield_above, settings.worker_yield_hold)
    contexts = [
        db.pool_context(settings),
        _stripe_gateway,
        # Starts while RabbitMQ is unreachable: mirror events wait in the outbox.
        bus.bus_context(settings, name=SERVICE),
        outbox.relay_context(settings, "mirror"),
        # portal-web's writes to Stripe (billing_sync.rpc); serves once the bus connects.
        rpc.rpc_context(app, queue=rpc_queue),
    ]
    if worker:
        contexts.append(worker_context())
    if reconcile:
        contexts.append(reconciler_context)
    app.cleanup_ctx.extend(contexts)
    # Postgres is the truth and where accepted webhooks go: required. RabbitMQ only
    # carries the mirror's change events, which wait in the outbox: optional. Stripe is
    # not checked: an outage there delays processing (events wait), it does not stop
    # this replica from accepting webhooks. RPC rides on RabbitMQ: optional too.
    add_health_routes(
        app,
        required={"postgres": _check_postgres},
        optional={"rabbitmq": _check_rabbitmq, "rpc": _check_rpc},
    )
    app.router.add_routes(webhooks.routes)
    return app
