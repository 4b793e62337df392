"""Every call is scoped to (site, customer): an object of another customer, or of
another site, is ``not_found`` (the same reply as for no such object) and Stripe is not
written."""

from __future__ import annotations

import pytest

from billfold.rpc import (
    Call,
    CreateSetupSession,
    DetachPaymentMethod,
    PayInvoice,
    ResumeSubscription,
    RpcNotFound,
    SetAutoPay,
    SetCancelAtPeriodEnd,
    SetDefaultPaymentMethod,
    UpdateBillingProfile,
)

from .rpc_harness import Customer, RpcEnv, rpc_env_fixture  # noqa: F401 - the fixture

SEND_INVOICE = {"collection_method": "send_invoice", "days_until_due": 30}


def _calls(site_id: str, customer_id: str, victim: Customer, invoice_id: str) -> list[Call]:
    """One call of each kind by ``customer_id`` in ``site_id`` on ``victim``'s objects."""
    assert victim.subscription is not None
    assert victim.card is not None
    who = {"site_id": site_id, "customer_id": customer_id}
    return [
        SetCancelAtPeriodEnd(**who, subscription_id=victim.subscription, cancel_at_period_end=True),
        ResumeSubscription(**who, subscription_id=victim.subscription),
        SetAutoPay(**who, subscription_id=victim.subscription, auto_pay=False),
        SetDefaultPaymentMethod(**who, payment_method_id=victim.card),
        DetachPaymentMethod(**who, payment_method_id=victim.card),
        PayInvoice(**who, invoice_id=invoice_id),
    ]


async def _victim(env: RpcEnv, site_id: str | None = None) -> tuple[Customer, str]:
    victim = await env.customer(site_id=site_id, subscription=SEND_INVOICE)
    spare = await env.api.v1.payment_methods.attach_async(
        "pm_card_amex", params={"customer": victim.stripe_id}
    )
    victim.card = spare.id  # a non-default card: detaching it would be allowed to its owner
    await env.mirror()
    [inv] = (await env.api.v1.invoices.list_async(params={"customer": victim.stripe_id})).data
    assert inv.id is not None
    return victim, inv.id


async def _refused_without_writes(env: RpcEnv, calls: list[Call]) -> None:
    missing = await _reply_for_a_missing_object(env, calls[0])
    for call in calls:
        with pytest.raises(RpcNotFound) as caught:
            await env.client.call(call)
        # Indistinguishable from an object that does not exist at all.
        assert caught.value.body == missing
        assert env.writes(call.call_id) == 0


async def _reply_for_a_missing_object(env: RpcEnv, like: Call) -> object:
    ghost = like.model_copy(update={"call_id": f"{like.call_id}x", "subscription_id": "sub_none"})
    with pytest.raises(RpcNotFound) as caught:
        await env.client.call(ghost)
    return caught.value.body


async def test_another_customers_objects_in_the_same_site(rpc_env: RpcEnv) -> None:
    env = rpc_env
    caller = await env.customer()
    victim, invoice_id = await _victim(env)
    await _refused_without_writes(env, _calls(env.site_id, caller.id, victim, invoice_id))
    # The victim's own objects are untouched, in Stripe and in the mirror.
    assert victim.subscription is not None
    sub = await env.api.v1.subscriptions.retrieve_async(victim.subscription)
    assert (sub.cancel_at_period_end, sub.collection_method) == (False, "send_invoice")
    inv = await env.api.v1.invoices.retrieve_async(invoice_id)
    assert inv.status == "open"
    pm = await env.api.v1.payment_methods.retrieve_async(str(victim.card))
    assert pm.customer == victim.stripe_id
    # And the owner may do what the other customer may not.
    await env.client.call(
        SetAutoPay(
            site_id=env.site_id,
            customer_id=victim.id,
            subscription_id=victim.subscription,
            auto_pay=True,
        )
    )


async def test_another_sites_customer_and_objects(rpc_env: RpcEnv) -> None:
    env = rpc_env
    other_site = await env.new_site()
    theirs, invoice_id = await _victim(env, site_id=other_site)
    mine = await env.customer()
    # My site's customer on the other site's objects.
    await _refused_without_writes(env, _calls(env.site_id, mine.id, theirs, invoice_id))
    # The other site's customer id, named with my site: no such customer here.
    await _refused_without_writes(env, _calls(env.site_id, theirs.id, theirs, invoice_id))
    # And with the right site it is that customer's (an ok reply).
    result = await env.client.call(
        SetAutoPay(
            site_id=other_site,
            customer_id=theirs.id,
            subscription_id=str(theirs.subscription),
            auto_pay=True,
        )
    )
    assert result["id"] == theirs.subscription


async def test_calls_naming_only_the_customer_check_the_site(rpc_env: RpcEnv) -> None:
    env = rpc_env
    other_site = await env.new_site()
    theirs = await env.customer(site_id=other_site)
    for call in (
        UpdateBillingProfile(site_id=env.site_id, customer_id=theirs.id, name="Mallory"),
        CreateSetupSession(
            site_id=env.site_id,
            customer_id=theirs.id,
            success_url="https://portal.example.com/ok",
            cancel_url="https://portal.example.com/no",
        ),
    ):
        with pytest.raises(RpcNotFound):
            await env.client.call(call)
        assert env.writes(call.call_id) == 0
    stripe_customer = await env.api.v1.customers.retrieve_async(theirs.stripe_id)
    assert stripe_customer.name == "Ada"
