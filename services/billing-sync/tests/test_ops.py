"""Health, readiness, metrics, and the Stripe client's configuration."""

from __future__ import annotations

import pytest
import stripe
from aiohttp import ClientSession

from billing_sync.accounts import SiteAccount
from billing_sync.settings import BillingSyncSettings
from billing_sync.stripe_api import (
    API_VERSION,
    NoStripeKey,
    StripeGateway,
    idempotency_key,
    write_options,
)

from .conftest import Synced


async def test_health_readiness_and_metrics(synced: Synced) -> None:
    async with ClientSession() as http:
        async with http.get(synced.server.make_url("/healthz")) as resp:
            assert resp.status == 200
        async with http.get(synced.server.make_url("/readyz")) as resp:
            body = await resp.json()
        # Postgres is required and up; the test's broker address answers nothing, which
        # only degrades (the mirror's events wait in the outbox).
        assert resp.status == 200
        assert body["status"] == "degraded"
        assert body["checks"]["postgres"] == "ok"
        assert body["checks"]["rabbitmq"].startswith("error")
        async with http.get(synced.server.make_url("/metrics")) as resp:
            text = await resp.text()
        assert "billfold_stripe_webhooks_total" in text
        assert "billfold_stripe_events_processed_total" in text
        async with http.get(synced.server.make_url("/nope")) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "route_not_found"


def test_the_pinned_api_version_is_the_librarys() -> None:
    # Our one pin must describe the shapes the installed library's typed classes have.
    assert stripe.api_version == API_VERSION


async def test_clients_per_site_account(settings: BillingSyncSettings) -> None:
    gateway = StripeGateway(settings)
    try:
        own = SiteAccount("site_a", "key_x/acct_1", "acct_1", True, api_key="sk_test_own")
        shared = SiteAccount("site_b", "platform", None, True)
        client = gateway.client(own)
        assert gateway.client(own) is client  # one client per (key, account)
        assert client._requestor._options.api_key == "sk_test_own"
        assert client._requestor._options.stripe_account == "acct_1"
        assert client._requestor._options.stripe_version == API_VERSION
        assert client._requestor._options.max_network_retries == settings.stripe_max_network_retries
        deployment = gateway.client(shared)
        assert deployment._requestor._options.api_key == settings.stripe_api_key.get_secret_value()  # type: ignore[union-attr]
        assert deployment._requestor._options.stripe_account is None
        keyless = StripeGateway(settings.model_copy(update={"stripe_api_key": None}))
        with pytest.raises(NoStripeKey):
            keyless.client(shared)
        await keyless.close()
    finally:
        await gateway.close()


def test_writes_carry_a_stable_idempotency_key() -> None:
    a = idempotency_key("cancel_subscription", "sub_1", "at_period_end")
    assert a == idempotency_key("cancel_subscription", "sub_1", "at_period_end")
    assert a != idempotency_key("cancel_subscription", "sub_2", "at_period_end")
    assert write_options(a) == {"idempotency_key": a}
    with pytest.raises(ValueError, match="idempotency key"):
        write_options("")
