"""Billing data made in the fake Stripe the way a tenant's backend makes it (through the
real ``stripe`` client), for every package's tests that need a customer to act on:
billing-sync's RPC tests and portal-web's action tests."""

from __future__ import annotations

from typing import Any

import stripe


async def customer_with_cards(
    api: stripe.StripeClient,
    *,
    cards: tuple[str, ...] = ("pm_card_visa",),
    email: str,
    name: str = "Ada",
    metadata: dict[str, str] | None = None,
) -> tuple[stripe.Customer, list[str]]:
    """A customer with ``cards`` (test card ids) attached, the first one its default."""
    params: dict[str, Any] = {"email": email, "name": name}
    if metadata:
        params["metadata"] = metadata
    cus = await api.v1.customers.create_async(params=params)  # type: ignore[arg-type]
    card_ids: list[str] = []
    for card in cards:
        pm = await api.v1.payment_methods.attach_async(card, params={"customer": cus.id})
        card_ids.append(str(pm.id))
    if card_ids:
        await api.v1.customers.update_async(
            cus.id, params={"invoice_settings": {"default_payment_method": card_ids[0]}}
        )
    return cus, card_ids


async def monthly_price(
    api: stripe.StripeClient, *, product: str = "Plan", unit_amount: int = 1500
) -> str:
    """A monthly USD price of a new product; its id."""
    prod = await api.v1.products.create_async(params={"name": product})
    price = await api.v1.prices.create_async(
        params={
            "product": prod.id,
            "currency": "usd",
            "unit_amount": unit_amount,
            "recurring": {"interval": "month"},
        }
    )
    return str(price.id)


async def open_invoice(api: stripe.StripeClient, customer: str, price: str) -> str:
    """An invoiced (``send_invoice``) subscription's first invoice, finalized: open, due
    in 30 days. Its id."""
    sub = await api.v1.subscriptions.create_async(
        params={
            "customer": customer,
            "items": [{"price": price}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )
    invoice = str(getattr(sub.latest_invoice, "id", sub.latest_invoice))
    if (await api.v1.invoices.retrieve_async(invoice)).status == "draft":
        await api.v1.invoices.finalize_invoice_async(invoice)
    return invoice
