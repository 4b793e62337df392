"""Subscription calls over the real RPC path: the reply is the mirror row, written before
the reply (the worker is off: only the call can have written it)."""

from __future__ import annotations

import asyncio
import json
import secrets
from datetime import datetime

import pytest

from billfold.rpc import (
    CancellationReason,
    ResumeSubscription,
    RpcInvalidRequest,
    RpcNotFound,
    RpcStripeError,
    SetAutoPay,
    SetCancelAtPeriodEnd,
)

from .conftest import Eventually
from .rpc_harness import RpcEnv, rpc_env_fixture  # noqa: F401 - the fixture


async def _row(env: RpcEnv, sub_id: str, column: str) -> object:
    # `column` is a literal of these tests.
    return await env.pool.fetchval(
        f"SELECT {column} FROM mirror.subscriptions WHERE stripe_id = $1",  # noqa: S608
        sub_id,
    )


async def test_cancel_at_period_end_with_a_reason_then_undo_it(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer(subscription={})
    assert cus.subscription is not None
    call = SetCancelAtPeriodEnd(
        site_id=env.site_id,
        customer_id=cus.id,
        subscription_id=cus.subscription,
        cancel_at_period_end=True,
        reason=CancellationReason(feedback="too_expensive", comment="pricey"),
    )
    result = await env.client.call(call)
    assert result["object"] == "subscription"
    assert result["id"] == cus.subscription
    assert result["cancel_at_period_end"] is True
    assert result["cancellation_feedback"] == "too_expensive"
    assert result["cancel_at"] == result["current_period_end"]
    assert await _row(env, cus.subscription, "cancel_at_period_end") is True
    assert await _row(env, cus.subscription, "cancellation_feedback") == "too_expensive"
    sub = await env.api.v1.subscriptions.retrieve_async(cus.subscription)
    assert sub.cancel_at_period_end is True
    assert sub.cancellation_details is not None
    assert sub.cancellation_details.comment == "pricey"

    undo = SetCancelAtPeriodEnd(
        site_id=env.site_id,
        customer_id=cus.id,
        subscription_id=cus.subscription,
        cancel_at_period_end=False,
    )
    result = await env.client.call(undo)
    assert result["cancel_at_period_end"] is False
    assert result["cancel_at"] is None
    assert await _row(env, cus.subscription, "cancel_at_period_end") is False
    assert env.writes(call.call_id) == 1
    assert env.writes(undo.call_id) == 1


async def test_the_mirror_change_is_published_as_an_event(
    rpc_env: RpcEnv, eventually: Eventually
) -> None:
    """The call writes through the mirror's apply, so its change event goes through
    billing-sync's outbox to the bus like a webhook's would."""
    env = rpc_env
    cus = await env.customer(subscription={})
    assert cus.subscription is not None

    async def setup_events_published() -> bool:
        left = await env.pool.fetchval(
            "SELECT count(*) FROM mirror.outbox WHERE payload->>'site_id' = $1", env.site_id
        )
        return int(left) == 0

    # The events of the setup's own mirroring are gone before we listen: what arrives
    # is the call's.
    await eventually(setup_events_published)
    channel = await env.bus.open_channel()
    try:
        queue = await channel.declare_queue(
            f"test-rpc-events-{secrets.token_hex(4)}", exclusive=True, auto_delete=True
        )
        await queue.bind(env.bus.settings.exchange, routing_key="subscription.#")
        call = SetCancelAtPeriodEnd(
            site_id=env.site_id,
            customer_id=cus.id,
            subscription_id=cus.subscription,
            cancel_at_period_end=True,
        )
        await env.client.call(call)

        async def published() -> None:
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    event = json.loads(message.body)
                    data = event["data"]
                    if (
                        event["type"] == "subscription.updated"
                        and data["subscription_id"] == cus.subscription
                    ):
                        assert event["site_id"] == env.site_id
                        assert data["customer_id"] == cus.id
                        return

        await asyncio.wait_for(published(), 20)
    finally:
        await channel.close()


async def test_auto_pay_off_and_on_is_the_collection_method(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer(subscription={})
    assert cus.subscription is not None
    off = SetAutoPay(
        site_id=env.site_id, customer_id=cus.id, subscription_id=cus.subscription, auto_pay=False
    )
    result = await env.client.call(off)
    assert result["collection_method"] == "send_invoice"
    assert await _row(env, cus.subscription, "collection_method") == "send_invoice"
    on = SetAutoPay(
        site_id=env.site_id, customer_id=cus.id, subscription_id=cus.subscription, auto_pay=True
    )
    result = await env.client.call(on)
    assert result["collection_method"] == "charge_automatically"
    assert await _row(env, cus.subscription, "collection_method") == "charge_automatically"
    sub = await env.api.v1.subscriptions.retrieve_async(cus.subscription)
    assert sub.collection_method == "charge_automatically"


async def test_resume_a_paused_subscription(rpc_env: RpcEnv) -> None:
    env = rpc_env
    # A trial without a card, set to pause when it ends, ended now: paused.
    cus = await env.customer(
        card=None,
        subscription={
            "trial_period_days": 7,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        },
    )
    assert cus.subscription is not None
    await env.api.v1.subscriptions.update_async(cus.subscription, params={"trial_end": "now"})
    # The customer adds a card, then resumes: the first invoice is paid with it.
    pm = await env.api.v1.payment_methods.attach_async(
        "pm_card_visa", params={"customer": cus.stripe_id}
    )
    await env.api.v1.customers.update_async(
        cus.stripe_id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    await env.mirror()
    assert await _row(env, cus.subscription, "status") == "paused"
    assert await _row(env, cus.subscription, "paused_reason") == "trial_end_without_payment_method"
    call = ResumeSubscription(
        site_id=env.site_id, customer_id=cus.id, subscription_id=cus.subscription
    )
    result = await env.client.call(call)
    assert result["status"] == "active"
    assert await _row(env, cus.subscription, "status") == "active"
    # One write: its events (resumed, the new period's invoice...) all carry the call's key.
    written = env.writes(call.call_id)
    assert written > 0
    # Delivered again (a retry of the same call): answered from the first run, no new write.
    assert (await env.client.call(call))["status"] == "active"
    assert env.writes(call.call_id) == written
    types = env.fake.event_types()
    assert types.count("customer.subscription.resumed") == 1, types


async def test_resume_paused_collection(rpc_env: RpcEnv) -> None:
    """Payment collection paused (``pause_collection``, the status stays active): resume
    clears it at Stripe, once, and the mirror shows it before the reply."""
    env = rpc_env
    cus = await env.customer(subscription={})
    other = await env.customer(subscription={})
    assert cus.subscription is not None
    resumes_at = env.fake.now() + 20 * 86_400
    await env.api.v1.subscriptions.update_async(
        cus.subscription,
        params={"pause_collection": {"behavior": "mark_uncollectible", "resumes_at": resumes_at}},
    )
    await env.mirror()
    assert await _row(env, cus.subscription, "pause_collection_behavior") == "mark_uncollectible"
    paused_until = await _row(env, cus.subscription, "pause_collection_resumes_at")
    assert isinstance(paused_until, datetime)
    assert int(paused_until.timestamp()) == resumes_at

    # Another customer of the site cannot resume it: refused as unknown, nothing written.
    theirs = ResumeSubscription(
        site_id=env.site_id, customer_id=other.id, subscription_id=cus.subscription
    )
    with pytest.raises(RpcNotFound):
        await env.client.call(theirs)
    assert env.writes(theirs.call_id) == 0
    sub = await env.api.v1.subscriptions.retrieve_async(cus.subscription)
    assert sub.pause_collection is not None

    call = ResumeSubscription(
        site_id=env.site_id, customer_id=cus.id, subscription_id=cus.subscription
    )
    result = await env.client.call(call)
    assert result["status"] == "active"
    assert result["pause_collection_behavior"] is None
    assert result["pause_collection_resumes_at"] is None
    assert await _row(env, cus.subscription, "pause_collection_behavior") is None
    sub = await env.api.v1.subscriptions.retrieve_async(cus.subscription)
    assert sub.pause_collection is None
    assert sub.status == "active"
    assert (await env.client.call(call))["pause_collection_behavior"] is None
    assert env.writes(call.call_id) == 1


async def test_resuming_an_active_subscription_is_a_typed_stripe_error(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer(subscription={})
    assert cus.subscription is not None
    call = ResumeSubscription(
        site_id=env.site_id, customer_id=cus.id, subscription_id=cus.subscription
    )
    with pytest.raises(RpcStripeError) as caught:
        await env.client.call(call)
    # Stripe's own text names API fields; the customer gets the generic one.
    assert "`paused`" not in caught.value.message
    assert caught.value.message.startswith("This change could not be made")
    assert not isinstance(caught.value, RpcInvalidRequest)


async def test_resume_a_subscription_paused_on_demand(rpc_env: RpcEnv) -> None:
    """Paused with Stripe's ``/pause`` (status ``paused``, why and since when mirrored):
    resume restarts it at Stripe once, the mirror shows it before the reply, and another
    customer of the site cannot resume it."""
    env = rpc_env
    cus = await env.customer(subscription={})
    other = await env.customer(subscription={})
    assert cus.subscription is not None
    await env.api.v1.subscriptions.pause_async(cus.subscription)
    await env.mirror()
    assert await _row(env, cus.subscription, "status") == "paused"
    assert await _row(env, cus.subscription, "paused_reason") == "pause_requested"
    paused_at = await _row(env, cus.subscription, "paused_at")
    assert isinstance(paused_at, datetime)
    assert abs(paused_at.timestamp() - env.fake.now()) < 60

    theirs = ResumeSubscription(
        site_id=env.site_id, customer_id=other.id, subscription_id=cus.subscription
    )
    with pytest.raises(RpcNotFound):
        await env.client.call(theirs)
    assert env.writes(theirs.call_id) == 0
    assert (await env.api.v1.subscriptions.retrieve_async(cus.subscription)).status == "paused"

    call = ResumeSubscription(
        site_id=env.site_id, customer_id=cus.id, subscription_id=cus.subscription
    )
    result = await env.client.call(call)
    assert result["status"] == "active"
    assert result["paused_reason"] is None
    assert result["paused_at"] is None
    assert await _row(env, cus.subscription, "status") == "active"
    written = env.writes(call.call_id)
    assert written > 0
    assert (await env.client.call(call))["status"] == "active"
    assert env.writes(call.call_id) == written
    assert env.fake.event_types().count("customer.subscription.resumed") == 1
