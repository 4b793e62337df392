"""Products, prices and the pricing maths, checked through invoices the fake generates."""

from __future__ import annotations

from decimal import Decimal

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake


def _first_invoice_total(client: stripe.StripeClient, price_id: str, quantity: int) -> int:
    customer = client.v1.customers.create()
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price_id, "quantity": quantity}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )
    invoice = client.v1.invoices.retrieve(str(sub.latest_invoice))
    return int(invoice.total)


def _tiered(client: stripe.StripeClient, mode: str) -> stripe.Price:
    return client.v1.prices.create(
        params={
            "currency": "usd",
            "product_data": {"name": f"Seats ({mode})"},
            "recurring": {"interval": "month"},
            "billing_scheme": "tiered",
            "tiers_mode": mode,
            "tiers": [
                {"up_to": 5, "unit_amount": 1000},
                {"up_to": 10, "unit_amount": 800, "flat_amount": 500},
                {"up_to": "inf", "unit_amount": 500},
            ],
            "expand": ["tiers"],
        }
    )


def test_products_and_prices(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    product = client.v1.products.create(params={"name": "Billfold", "metadata": {"k": "v"}})
    assert product.id.startswith("prod_")
    assert product.active is True
    price = client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "unit_amount": 1200,
            "recurring": {"interval": "year", "interval_count": 1},
            "lookup_key": "annual",
        }
    )
    assert (price.type, price.billing_scheme, price.unit_amount_decimal) == (
        "recurring",
        "per_unit",
        Decimal("1200"),  # the library turns *_decimal strings into Decimals
    )
    assert price.recurring.interval == "year"
    one_time = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 99}
    )
    assert one_time.type == "one_time"
    assert one_time.recurring is None
    listed = client.v1.prices.list(params={"product": product.id, "type": "recurring"})
    assert [p.id for p in listed.data] == [price.id]
    by_key = client.v1.prices.list(params={"lookup_keys": ["annual"]})
    assert [p.id for p in by_key.data] == [price.id]
    price = client.v1.prices.update(price.id, params={"active": False})
    assert price.active is False
    product = client.v1.products.update(product.id, params={"name": "Billfold 2"})
    assert client.v1.products.retrieve(product.id).name == "Billfold 2"
    expanded = client.v1.prices.retrieve(price.id, params={"expand": ["product"]})
    assert expanded.product.name == "Billfold 2"


def test_price_validation(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    product = client.v1.products.create(params={"name": "X"})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(params={"product": product.id, "currency": "usd"})
    assert (err.value.code, err.value.param) == ("parameter_missing", "unit_amount")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(params={"product": product.id, "currency": "zzz", "unit_amount": 1})
    assert err.value.param == "currency"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(
            params={
                "product": product.id,
                "currency": "usd",
                "unit_amount": 1,
                "recurring": {"interval": "month", "interval_count": 37},
            }
        )
    assert err.value.param == "recurring[interval_count]"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(
            params={"product": product.id, "currency": "usd", "unit_amount": "ten"}
        )
    assert err.value.code == "parameter_invalid_integer"


def test_tiers_are_hidden_unless_expanded(stripe_client: stripe.StripeClient) -> None:
    price = _tiered(stripe_client, "graduated")
    assert [t.up_to for t in price.tiers] == [5, 10, None]
    plain = stripe_client.v1.prices.retrieve(price.id)
    assert "tiers" not in plain


@pytest.mark.parametrize(
    ("mode", "quantity", "expected"),
    [
        # graduated: 5x10.00 + (5x8.00 + 5.00) + 2x5.00
        ("graduated", 12, 5000 + 4500 + 1000),
        ("graduated", 3, 3000),
        # volume: every unit at the tier the total falls into (+ that tier's flat fee)
        ("volume", 12, 12 * 500),
        ("volume", 7, 7 * 800 + 500),
        ("volume", 5, 5 * 1000),
    ],
)
def test_tiered_pricing(
    stripe_client: stripe.StripeClient, mode: str, quantity: int, expected: int
) -> None:
    price = _tiered(stripe_client, mode)
    assert _first_invoice_total(stripe_client, price.id, quantity) == expected


def test_per_unit_flat_and_zero_decimal_currency(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    yen = client.v1.prices.create(
        params={
            "currency": "jpy",
            "unit_amount": 980,
            "recurring": {"interval": "month", "interval_count": 3},
            "product_data": {"name": "Quarterly"},
        }
    )
    assert _first_invoice_total(client, yen.id, 3) == 2940  # ¥2,940, no cents
    invoice = client.v1.invoices.list(params={"limit": 1}).data[0]
    assert invoice.currency == "jpy"
    assert invoice.lines.data[0].description == "3 \u00d7 Quarterly (at \u00a5980 / month)"
    period = invoice.lines.data[0].period
    assert 89 * 86400 <= period.end - period.start <= 92 * 86400
    flat = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount_decimal": "1250.5",
            "recurring": {"interval": "month"},
            "product_data": {"name": "Decimal"},
        }
    )
    assert _first_invoice_total(client, flat.id, 2) == 2501
    packaged = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 1000,
            "transform_quantity": {"divide_by": 10, "round": "up"},
            "recurring": {"interval": "month"},
            "product_data": {"name": "Packs of 10"},
        }
    )
    assert _first_invoice_total(client, packaged.id, 21) == 3000
