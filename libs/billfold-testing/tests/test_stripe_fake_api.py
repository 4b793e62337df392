"""Cross-cutting API behaviour: auth, errors, idempotency, pagination, expand, isolation,
test-control endpoints and the ``python -m`` entry point."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import stripe
from stripe.params import CustomerListParams, SubscriptionListParams

from billfold_testing.stripe_fake.fixtures import StripeFake, post_control


@pytest.mark.parametrize("key", ["sk_live_51Habcdefghijklmnop1234", "pk_test_abc123456789", "x"])
def test_only_test_secret_keys_are_accepted(stripe_fake: StripeFake, key: str) -> None:
    with pytest.raises(stripe.AuthenticationError) as err:
        stripe_fake.client(api_key=key).v1.customers.list()
    assert err.value.http_status == 401
    message = str(err.value.user_message)
    assert message.startswith("Invalid API Key provided: ")
    if len(key) > 12:
        assert key not in message
        assert message.endswith(key[-4:])


def test_missing_key_is_401_in_stripe_shape(stripe_fake: StripeFake) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(stripe_fake.base_url + "/v1/customers", timeout=10)  # noqa: S310
    assert err.value.code == 401
    with err.value:  # an HTTPError holds the open response
        body = json.loads(err.value.read())
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("You did not provide an API key.")


def test_unknown_ids_and_routes(stripe_client: stripe.StripeClient) -> None:
    for call in (
        lambda: stripe_client.v1.customers.retrieve("cus_nope"),
        lambda: stripe_client.v1.subscriptions.retrieve("sub_nope"),
        lambda: stripe_client.v1.invoices.retrieve("in_nope"),
        lambda: stripe_client.v1.prices.retrieve("price_nope"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as err:
            call()
        assert (err.value.http_status, err.value.code, err.value.param) == (
            404,
            "resource_missing",
            "id",
        )
        assert "No such" in str(err.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as err:
        stripe_client.raw_request("get", "/v1/not_a_thing")
    assert err.value.http_status == 404
    assert "Unrecognized request URL" in str(err.value.user_message)


def test_error_body_shape(stripe_fake: StripeFake) -> None:
    request = urllib.request.Request(  # noqa: S310 (loopback test server)
        stripe_fake.base_url + "/v1/customers/cus_missing",
        headers={"Authorization": f"Bearer {stripe_fake.api_key}"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310
    with err.value:  # an HTTPError holds the open response
        body = json.loads(err.value.read())
    assert err.value.code == 404
    assert err.value.headers["Request-Id"].startswith("req_")
    error = body["error"]
    assert {k: error[k] for k in ("type", "code", "message", "param")} == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "message": "No such customer: 'cus_missing'",
        "param": "id",
    }


def test_idempotency_key_replays_the_same_response(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    params = {"email": "once@example.com"}
    first = stripe_client.v1.customers.create(params=params, options={"idempotency_key": "k-1"})
    again = stripe_client.v1.customers.create(params=params, options={"idempotency_key": "k-1"})
    assert again.to_dict() == first.to_dict()
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(stripe_client.v1.customers.list().data) == 1
    assert stripe_fake.event_types() == ["customer.created"]
    with pytest.raises(stripe.IdempotencyError):
        stripe_client.v1.customers.create(
            params={"email": "other@example.com"}, options={"idempotency_key": "k-1"}
        )
    # A declined attach is remembered too: replaying it does not retry the card.
    customer = stripe_client.v1.customers.create()
    for _ in range(2):
        with pytest.raises(stripe.CardError):
            stripe_client.v1.payment_methods.attach(
                "pm_card_chargeDeclined",
                params={"customer": customer.id},
                options={"idempotency_key": "k-2"},
            )


def test_pagination_over_hundreds(stripe_client: stripe.StripeClient) -> None:
    created = [
        stripe_client.v1.customers.create(params={"metadata": {"n": str(i)}}).id for i in range(250)
    ]
    page = stripe_client.v1.customers.list(params={"limit": 100})
    assert len(page.data) == 100
    assert page.has_more is True
    page2 = stripe_client.v1.customers.list(
        params={"limit": 100, "starting_after": page.data[-1].id}
    )
    page3 = stripe_client.v1.customers.list(
        params={"limit": 100, "starting_after": page2.data[-1].id}
    )
    assert (len(page2.data), page2.has_more, len(page3.data), page3.has_more) == (
        100,
        True,
        50,
        False,
    )
    back = stripe_client.v1.customers.list(params={"limit": 10, "ending_before": page2.data[0].id})
    assert [c.id for c in back.data] == [c.id for c in page.data[-10:]]
    walked = [
        c.id for c in stripe_client.v1.customers.list(params={"limit": 37}).auto_paging_iter()
    ]
    assert walked == created[::-1]
    with pytest.raises(stripe.InvalidRequestError) as err:
        stripe_client.v1.customers.list(params={"limit": 101})
    assert err.value.param == "limit"


def _active_subscriptions(client: stripe.StripeClient, count: int) -> list[str]:
    customer = client.v1.customers.create(params={"email": "subs@example.com"})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 500,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Plan"},
        }
    )
    return [
        client.v1.subscriptions.create(
            params={"customer": customer.id, "items": [{"price": price.id}]}
        ).id
        for _ in range(count)
    ]


def test_cursor_excluded_by_the_filters_still_marks_a_place(
    stripe_client: stripe.StripeClient,
) -> None:
    """As on Stripe, a cursor the filters exclude is placed by its spot in the full ordering."""
    client = stripe_client
    subs = _active_subscriptions(client, 5)  # listed newest first: 4 3 2 1 0
    client.v1.subscriptions.cancel(subs[2])

    def listed(params: SubscriptionListParams) -> tuple[list[str], bool]:
        page = client.v1.subscriptions.list(params=params)
        return [s.id for s in page.data], page.has_more

    assert listed({"status": "active", "starting_after": subs[2]}) == ([subs[1], subs[0]], False)
    assert listed({"status": "active", "ending_before": subs[2]}) == ([subs[4], subs[3]], False)
    assert listed({"status": "active", "starting_after": subs[2], "limit": 1}) == ([subs[1]], True)
    assert listed({"status": "active", "ending_before": subs[2], "limit": 1}) == ([subs[3]], True)
    # without ``status`` canceled subscriptions are hidden, but one still works as a cursor
    assert listed({"starting_after": subs[2]}) == ([subs[1], subs[0]], False)
    assert listed({"status": "canceled", "starting_after": subs[3]}) == ([subs[2]], False)

    ids = [
        client.v1.customers.create(params={"email": f"u{i % 3}@example.com"}).id for i in range(9)
    ]  # u1@example.com: ids 1, 4, 7

    def u1(params: CustomerListParams) -> list[str]:
        params["email"] = "u1@example.com"
        return [c.id for c in client.v1.customers.list(params=params).data]

    assert u1({"starting_after": ids[5]}) == [ids[4], ids[1]]
    assert u1({"ending_before": ids[5]}) == [ids[7]]
    assert u1({"starting_after": ids[0]}) == []
    assert u1({"ending_before": ids[8]}) == []

    for missing in ("cus_doesnotexist", subs[0]):  # no such id; an id of another resource
        cursors: list[tuple[str, CustomerListParams]] = [
            ("starting_after", {"starting_after": missing}),
            ("ending_before", {"ending_before": missing}),
        ]
        for param, params in cursors:
            with pytest.raises(stripe.InvalidRequestError) as err:
                u1(params)
            assert (err.value.http_status, err.value.code, err.value.param) == (
                404,
                "resource_missing",
                param,
            )
            assert err.value.user_message == f"No such customer: '{missing}'"


def test_auto_paging_a_filtered_list_yields_each_match_once(
    stripe_client: stripe.StripeClient,
) -> None:
    client = stripe_client
    ids = [
        client.v1.customers.create(params={"email": f"bulk{i % 3}@example.com"}).id
        for i in range(300)
    ]
    wanted = [cid for i, cid in enumerate(ids) if i % 3 == 1]  # 100 of them, oldest first

    def walk(params: CustomerListParams) -> list[str]:
        params["email"] = "bulk1@example.com"
        params["limit"] = 7
        return [c.id for c in client.v1.customers.list(params=params).auto_paging_iter()]

    assert walk({}) == wanted[::-1]
    # From a cursor the filter excludes (ids[150] is a bulk0 customer), forwards and backwards
    # (the library walks ``ending_before`` pages towards the newest, yielding oldest first).
    assert walk({"starting_after": ids[150]}) == wanted[:50][::-1]
    assert walk({"ending_before": ids[150]}) == wanted[50:]


async def test_async_client_paginates(
    stripe_fake: StripeFake, stripe_async_client: stripe.StripeClient
) -> None:
    client = stripe_async_client
    for i in range(15):
        await client.v1.customers.create_async(params={"email": f"a{i}@example.com"})
    page = await client.v1.customers.list_async(params={"limit": 4})
    seen = [c.id async for c in page.auto_paging_iter()]
    assert len(seen) == 15
    assert len(set(seen)) == 15
    with pytest.raises(stripe.InvalidRequestError):
        await client.v1.customers.retrieve_async("cus_nope")


def test_expand(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create(params={"email": "x@example.com"})
    pm = stripe_client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    stripe_client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    price = stripe_client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 100,
            "recurring": {"interval": "month"},
            "product_data": {"name": "E"},
        }
    )
    stripe_client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    subs = stripe_client.v1.subscriptions.list(
        params={"expand": ["data.customer", "data.latest_invoice", "data.items.data.price.product"]}
    )
    sub = subs.data[0]
    assert sub.customer.email == "x@example.com"
    assert sub.latest_invoice.object == "invoice"
    assert sub["items"].data[0].price.product.name == "E"
    with pytest.raises(stripe.InvalidRequestError) as err:
        stripe_client.v1.customers.retrieve(customer.id, params={"expand": ["email"]})
    assert "cannot be expanded" in str(err.value.user_message)


def test_instances_do_not_share_state(stripe_fake: StripeFake) -> None:
    other = StripeFake().start()
    try:
        a, b = stripe_fake.client(), other.client()
        made = a.v1.customers.create()
        assert b.v1.customers.list().data == []
        with pytest.raises(stripe.InvalidRequestError):
            b.v1.customers.retrieve(made.id)
        other.advance(86_400)
        assert other.now() - stripe_fake.now() >= 86_399
    finally:
        other.stop()


def test_control_endpoints(stripe_fake: StripeFake, stripe_client: stripe.StripeClient) -> None:
    base = stripe_fake.base_url
    with urllib.request.urlopen(base + "/_fake/clock", timeout=10) as resp:  # noqa: S310
        before = json.loads(resp.read())["now"]
    moved = post_control(base, "/_fake/clock/advance", seconds=3600)
    assert moved["now"] - before >= 3600
    moved = post_control(base, "/_fake/clock/advance", to=moved["now"] + 60)
    assert moved["now"] - before >= 3660
    stripe_client.v1.customers.create()
    assert post_control(base, "/_fake/reset") == {"reset": True}
    assert stripe_client.v1.customers.list().data == []
    assert stripe_client.v1.events.list().data == []
    assert stripe_fake.now() >= moved["now"]  # time never rewinds
    with pytest.raises(urllib.error.HTTPError) as err:
        post_control(base, "/_fake/clock/advance", seconds=-5)
    err.value.close()
    assert err.value.code == 400


def test_stripe_test_clocks_api(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    now = stripe_fake.now()
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": now})
    assert clock.status == "ready"
    assert clock.frozen_time == now
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    assert customer.test_clock == clock.id
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 100,
            "recurring": {"interval": "day"},
            "product_data": {"name": "Daily"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "default_payment_method": pm.id,
        }
    )
    target = now + 3 * 86_400 + 7200
    advanced = client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": target})
    assert advanced.frozen_time == target
    assert stripe_fake.now() < target  # only the clock's customers moved, as on Stripe
    invoices = client.v1.invoices.list(params={"subscription": sub.id})
    assert [i.status for i in invoices.data] == ["paid"] * 4  # start + three daily renewals
    assert client.v1.test_helpers.test_clocks.delete(clock.id).deleted is True


def test_a_test_clock_in_the_past_leaves_an_overdue_invoice(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    """Stripe's way to an overdue invoice: a customer on a test clock frozen in the past,
    a send_invoice subscription whose first invoice is due 14 days later, the clock
    advanced to about now: that invoice is open and its due date has passed."""
    client = stripe_client
    now = stripe_fake.now()
    start = now - 40 * 86_400
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": start})
    customer = client.v1.customers.create(params={"test_clock": clock.id})
    assert customer.created == start
    price = client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 5000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Invoiced"},
        }
    )
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "collection_method": "send_invoice",
            "days_until_due": 14,
        }
    )
    first = str(sub.latest_invoice)
    if client.v1.invoices.retrieve(first).status == "draft":
        client.v1.invoices.finalize_invoice(first)
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": now - 3600})
    overdue = client.v1.invoices.retrieve(first)
    assert overdue.status == "open"
    assert overdue.due_date == start + 14 * 86_400 < now
    # The renewal 30 days in came due on the clock's time, not on the fake's own.
    invoices = client.v1.invoices.list(params={"subscription": sub.id}).data
    assert len(invoices) == 2
    assert stripe_fake.now() < now + 3600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_runs_as_a_module() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "billfold_testing.stripe_fake", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        client = stripe.StripeClient(
            "sk_test_module",
            base_addresses={"api": f"http://127.0.0.1:{port}"},
            max_network_retries=0,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                customer = client.v1.customers.create(params={"email": "m@example.com"})
                break
            except stripe.APIConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert client.v1.customers.retrieve(customer.id).email == "m@example.com"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
