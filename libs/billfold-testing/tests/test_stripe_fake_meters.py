"""Billing meters, meter events, summaries, and usage-based prices billed at renewal."""

from __future__ import annotations

import pytest
import stripe

from billfold_testing.stripe_fake.fixtures import StripeFake

HOUR = 3600


def _meter(client: stripe.StripeClient, formula: str = "sum") -> stripe.billing.Meter:
    return client.v1.billing.meters.create(
        params={
            "display_name": "API calls",
            "event_name": f"api_calls_{formula}",
            "default_aggregation": {"formula": formula},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        }
    )


def _send(client: stripe.StripeClient, name: str, customer: str, value: int, at: int) -> None:
    client.v1.billing.meter_events.create(
        params={
            "event_name": name,
            "payload": {"stripe_customer_id": customer, "value": str(value)},
            "timestamp": at,
        }
    )


def test_meter_event_summaries(stripe_fake: StripeFake, stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    meter = _meter(client)
    assert meter.id.startswith("mtr_test_")
    assert meter.status == "active"
    alice = client.v1.customers.create().id
    bob = client.v1.customers.create().id
    start = (stripe_fake.now() // HOUR - 3) * HOUR
    for offset, who, value in [(10, alice, 5), (HOUR + 10, alice, 7), (20, bob, 100)]:
        _send(client, meter.event_name, who, value, start + offset)
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id, params={"customer": alice, "start_time": start, "end_time": start + 3 * HOUR}
    )
    assert [s.aggregated_value for s in summaries.data] == [12]
    assert summaries.data[0].meter == meter.id
    hourly = client.v1.billing.meters.event_summaries.list(
        meter.id,
        params={
            "customer": alice,
            "start_time": start,
            "end_time": start + 3 * HOUR,
            "value_grouping_window": "hour",
        },
    )
    assert [(s.start_time - start, s.aggregated_value) for s in hourly.data] == [
        (0, 5),
        (HOUR, 7),
        (2 * HOUR, 0),
    ]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing.meter_events.create(
            params={"event_name": meter.event_name, "payload": {"value": "1"}}
        )
    assert err.value.param == "payload[stripe_customer_id]"
    client.v1.billing.meters.deactivate(meter.id)
    assert client.v1.billing.meters.retrieve(meter.id).status == "inactive"
    assert [m.id for m in client.v1.billing.meters.list(params={"status": "inactive"}).data] == [
        meter.id
    ]


def test_metered_price_is_billed_in_arrears(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    meter = _meter(client)
    customer = client.v1.customers.create()
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 3,
            "recurring": {"interval": "day", "usage_type": "metered", "meter": meter.id},
            "product_data": {"name": "Calls"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "default_payment_method": pm.id,
        }
    )
    first = client.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (first.total, first.status) == (0, "paid")
    now = stripe_fake.now()
    _send(client, meter.event_name, customer.id, 40, now)
    _send(client, meter.event_name, customer.id, 2, now + 1)
    stripe_fake.advance(86_400 + HOUR)
    renewal = client.v1.invoices.retrieve(
        str(client.v1.subscriptions.retrieve(sub.id).latest_invoice)
    )
    assert (renewal.total, renewal.lines.data[0].quantity, renewal.status) == (126, 42, "paid")


def test_summary_bounds_must_be_aligned(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    """Stripe takes summary bounds on minute boundaries only, and on UTC day (hour)
    boundaries when grouped by day (hour): a mirror that sends a subscription's raw
    period start works on a lax fake and fails on Stripe."""
    client = stripe_client
    meter = _meter(client)
    alice = client.v1.customers.create().id
    day = 86_400
    midnight = stripe_fake.now() // day * day
    cases = [
        ({"start_time": midnight + 30, "end_time": midnight + 120}, "start_time"),
        ({"start_time": midnight, "end_time": midnight + 90}, "end_time"),
        (
            {
                "start_time": midnight + 60,
                "end_time": midnight + day,
                "value_grouping_window": "day",
            },
            "start_time",
        ),
        (
            {"start_time": midnight, "end_time": midnight + HOUR, "value_grouping_window": "day"},
            "end_time",
        ),
    ]
    for bounds, param in cases:
        with pytest.raises(stripe.InvalidRequestError) as err:
            client.v1.billing.meters.event_summaries.list(
                meter.id,
                params={"customer": alice, **bounds},  # type: ignore[typeddict-item]
            )
        assert err.value.param == param
    daily = client.v1.billing.meters.event_summaries.list(
        meter.id,
        params={
            "customer": alice,
            "start_time": midnight - day,
            "end_time": midnight + day,
            "value_grouping_window": "day",
        },
    )
    assert [s.start_time for s in daily.data] == [midnight - day, midnight]
