"""Stripe's 429s (issue 7: "back off on 429 with the library's retry"). A rate limit
(no ``Stripe-Should-Retry``) is not retried by the library, so the worker backs the
events off itself and completes them once Stripe answers again; a lock timeout
(``Stripe-Should-Retry: true``) is retried by the library and costs no attempt. The RPC
path answers a typed "busy, try again", and the retried call writes once."""

from __future__ import annotations

import pytest

from billfold.rpc import RpcUnavailable, SetCancelAtPeriodEnd
from billfold_testing.stripe_fake import seeding
from billing_sync import accounts
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.stripe_api import StripeGateway
from billing_sync.worker import Worker

from .compare import mismatches
from .conftest import Eventually, LogCapture, Synced
from .rpc_harness import RpcEnv, rpc_env_fixture  # noqa: F401 - the fixture
from .test_worker import MANUAL, _accepted

_STATE = (
    "SELECT count(*) FILTER (WHERE processed_at IS NULL) AS pending, "
    "count(*) FILTER (WHERE failed_at IS NOT NULL) AS gave_up, "
    "min(attempts) AS least, max(attempts) AS most, "
    "bool_and(processed_at IS NOT NULL OR next_attempt_at > now()) AS later, "
    "bool_and(last_error LIKE 'RateLimitError%') AS rate_limited "
    "FROM mirror.stripe_events WHERE site_id = $1"
)


@pytest.mark.parametrize("synced", MANUAL, indirect=True)
async def test_a_rate_limited_burst_backs_off_and_then_completes(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox
) -> None:
    customer = await synced.api.v1.customers.create_async(params={"email": "r@example.com"})
    for n in range(5):
        await synced.api.v1.customers.update_async(customer.id, params={"name": f"Name {n}"})
    events = await _accepted(synced)
    assert len(events) == 6
    # A customer refresh is one read (the customer, its tax ids included): two rounds.
    synced.fake.rate_limit(2, api_key=synced.api_key)
    # The library may retry (max_network_retries = 2), but not a rate limit.
    assert settings.stripe_max_network_retries > 0
    gateway = StripeGateway(settings)
    worker = Worker(settings, synced.pool, gateway, box)

    async def due_now() -> None:
        await synced.pool.execute(
            "UPDATE mirror.stripe_events SET next_attempt_at = now() WHERE site_id = $1",
            synced.site_id,
        )

    try:
        for attempt in (1, 2):
            assert await worker.run_once() == 6
            # One coalesced refresh, refused: the library did not retry it ...
            assert synced.fake.rate_limited() == attempt
            row = await synced.pool.fetchrow(_STATE, synced.site_id)
            # ... so the worker kept every event, one attempt each, backed off.
            assert (row["pending"], row["gave_up"]) == (6, 0)
            assert (row["least"], row["most"]) == (attempt, attempt)
            assert row["later"] is True
            assert row["rate_limited"] is True
            assert await worker.run_once() == 0  # not due yet: backed off, not hammering
            await due_now()
        assert await worker.run_once() == 6  # Stripe answers again
    finally:
        await gateway.close()
    assert synced.fake.rate_limited() == 2
    assert (await synced.pool.fetchrow(_STATE, synced.site_id))["pending"] == 0
    assert await mismatches(synced.pool, synced.api, synced.site_id, set()) == []
    assert (
        await synced.pool.fetchval(
            "SELECT name FROM mirror.customers WHERE stripe_id = $1", customer.id
        )
        == "Name 4"
    )


async def test_webhooks_during_a_rate_limit_are_not_lost(
    synced: Synced, eventually: Eventually, logs: LogCapture
) -> None:
    """The running worker: a customer with a card and a subscription (a burst of events
    over several objects) while Stripe limits the site's account for three requests."""
    synced.fake.rate_limit(3, api_key=synced.api_key)
    customer, _cards = await seeding.customer_with_cards(synced.api, email="b@example.com")
    price = await seeding.monthly_price(synced.api)
    await synced.api.v1.subscriptions.create_async(
        params={"customer": customer.id, "items": [{"price": price}]}
    )
    await synced.settled(eventually, timeout=90)
    assert synced.fake.rate_limited() == 3
    row = await synced.pool.fetchrow(_STATE, synced.site_id)
    assert (row["pending"], row["gave_up"]) == (0, 0)
    assert row["most"] >= 1  # failed attempts were recorded and retried later
    failures = [line for line in logs.lines() if line.get("event") == "stripe_events_failed"]
    assert failures
    assert all(line["error"].startswith("RateLimitError") for line in failures)
    assert await mismatches(synced.pool, synced.api, synced.site_id, set()) == []


async def test_a_lock_timeout_is_retried_by_the_library_without_an_attempt(
    synced: Synced, eventually: Eventually
) -> None:
    synced.fake.rate_limit(2, kind="lock_timeout", api_key=synced.api_key)
    await synced.api.v1.customers.create_async(params={"email": "l@example.com"})
    await synced.settled(eventually)
    assert synced.fake.rate_limited() == 2
    row = await synced.pool.fetchrow(_STATE, synced.site_id)
    assert (row["pending"], row["most"]) == (0, 0)  # no failure reached the worker
    assert await mismatches(synced.pool, synced.api, synced.site_id, set()) == []


async def test_a_rate_limited_portal_write_is_busy_and_the_retry_writes_once(
    rpc_env: RpcEnv,
) -> None:
    env = rpc_env
    cus = await env.customer(subscription={})
    assert cus.subscription is not None
    async with env.pool.acquire() as conn:
        account = await accounts.get(conn, env.box, env.site_id)
    assert account is not None
    assert account.api_key is not None
    call = SetCancelAtPeriodEnd(
        site_id=env.site_id,
        customer_id=cus.id,
        subscription_id=cus.subscription,
        cancel_at_period_end=True,
    )
    env.fake.rate_limit(1, api_key=account.api_key)
    with pytest.raises(RpcUnavailable) as caught:
        await env.client.call(call)
    assert env.fake.rate_limited() == 1
    assert caught.value.http_status == 503  # typed, never a 500
    assert caught.value.code == "stripe_unavailable"
    assert caught.value.message == "Billing is busy right now. Please try again in a moment."
    assert env.writes(call.call_id) == 0
    # Not stored: the retry runs the call again, with the same idempotency key.
    assert (
        await env.pool.fetchval(
            "SELECT count(*) FROM mirror.rpc_calls WHERE call_id = $1", call.call_id
        )
        == 0
    )
    result = await env.client.call(call)
    assert result["cancel_at_period_end"] is True
    assert env.writes(call.call_id) == 1
    again = await env.client.call(call)  # and once more: replayed, still one write
    assert again["cancel_at_period_end"] is True
    assert env.writes(call.call_id) == 1
