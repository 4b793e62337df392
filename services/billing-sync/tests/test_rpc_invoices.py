"""Paying an open invoice over the real RPC path: paid, declined, or the customer must
confirm on Stripe's page (``hosted_invoice_url``)."""

from __future__ import annotations

import pytest

from billfold.rpc import PayInvoice, RpcStripeError

from .rpc_harness import Customer, RpcEnv, rpc_env_fixture  # noqa: F401 - the fixture

SEND_INVOICE = {"collection_method": "send_invoice", "days_until_due": 30}


async def _open_invoice(env: RpcEnv, card: str) -> tuple[Customer, str]:
    """A customer whose default card is ``card`` with its first invoice open (sent, not
    charged)."""
    cus = await env.customer(card=card, subscription=SEND_INVOICE)
    invoices = await env.api.v1.invoices.list_async(params={"customer": cus.stripe_id})
    [inv] = invoices.data
    assert inv.status == "open"
    assert inv.id is not None
    return cus, inv.id


async def _status(env: RpcEnv, invoice_id: str) -> object:
    return await env.pool.fetchval(
        "SELECT status FROM mirror.invoices WHERE stripe_id = $1", invoice_id
    )


async def test_pay_an_open_invoice_with_the_default_card(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus, invoice_id = await _open_invoice(env, "pm_card_visa")
    assert await _status(env, invoice_id) == "open"
    call = PayInvoice(site_id=env.site_id, customer_id=cus.id, invoice_id=invoice_id)
    result = await env.client.call(call)
    assert result["object"] == "invoice"
    assert result["status"] == "paid"
    assert result["amount_remaining"] == 0
    assert await _status(env, invoice_id) == "paid"
    inv = await env.api.v1.invoices.retrieve_async(invoice_id)
    assert inv.status == "paid"


async def test_a_declined_card_is_a_typed_error_with_the_page_to_pay_on(
    rpc_env: RpcEnv,
) -> None:
    env = rpc_env
    # pm_card_chargeDeclined cannot even be attached (Stripe checks it then), so the
    # default card is the one that attaches and then declines every charge.
    cus, invoice_id = await _open_invoice(env, "pm_card_chargeCustomerFail")
    call = PayInvoice(site_id=env.site_id, customer_id=cus.id, invoice_id=invoice_id)
    with pytest.raises(RpcStripeError) as caught:
        await env.client.call(call)
    inv = await env.api.v1.invoices.retrieve_async(invoice_id)
    assert caught.value.code == "card_declined"
    assert caught.value.message.startswith("Your card was declined.")
    assert caught.value.hosted_invoice_url == inv.hosted_invoice_url is not None
    assert inv.status == "open"
    assert await _status(env, invoice_id) == "open"
    # A retry of the same call is answered from the run-once table: no second charge.
    with pytest.raises(RpcStripeError):
        await env.client.call(call)
    attempts = await env.api.v1.invoice_payments.list_async(params={"invoice": invoice_id})
    assert len(attempts.data) == 1


async def test_authentication_required_returns_the_hosted_invoice_url(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus, invoice_id = await _open_invoice(env, "pm_card_authenticationRequired")
    call = PayInvoice(site_id=env.site_id, customer_id=cus.id, invoice_id=invoice_id)
    with pytest.raises(RpcStripeError) as caught:
        await env.client.call(call)
    inv = await env.api.v1.invoices.retrieve_async(invoice_id)
    assert caught.value.code == "authentication_required"
    assert inv.hosted_invoice_url
    assert caught.value.hosted_invoice_url == inv.hosted_invoice_url
    # Stripe's developer text (it names the PaymentIntent) is not passed on.
    assert "PaymentIntent" not in caught.value.message
    assert "confirm" in caught.value.message
    assert inv.status == "open"
