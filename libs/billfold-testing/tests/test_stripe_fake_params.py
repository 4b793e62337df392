"""Unknown parameters fail with Stripe's ``parameter_unknown``; every parameter Stripe knows works.

A misspelt parameter must fail against the fake exactly as it would against Stripe, instead of
being silently ignored; parameters Stripe accepts but the fake does not model are accepted.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
import stripe
from stripe.params import CustomerCreateParams, PriceCreateParams, SubscriptionCreateParams

from billfold_testing.stripe_fake import app as fake_app
from billfold_testing.stripe_fake.errors import StripeError
from billfold_testing.stripe_fake.fixtures import StripeFake, post_control
from billfold_testing.stripe_fake.forms import decode
from billfold_testing.stripe_fake.params import Allow


def _any(params: object) -> Any:
    """Params the library's TypedDicts (rightly) refuse, for sending anyway."""
    return params


def _price(client: stripe.StripeClient) -> stripe.Price:
    return client.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": 1000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Plan"},
        }
    )


def _customer_with_card(client: stripe.StripeClient) -> stripe.Customer:
    customer = client.v1.customers.create(params={"email": "p@example.com"})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    return client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )


def _assert_unknown(err: pytest.ExceptionInfo[stripe.InvalidRequestError], param: str) -> None:
    assert err.value.http_status == 400
    assert err.value.code == "parameter_unknown"
    assert err.value.param == param
    assert err.value.user_message == f"Received unknown parameter: {param}"
    assert err.value.error is not None
    assert err.value.error.type == "invalid_request_error"


def test_misspelt_top_level_param_is_rejected_and_changes_nothing(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        stripe_client.v1.customers.create(params=_any({"emial": "ada@example.com"}))
    _assert_unknown(err, "emial")
    assert stripe_client.v1.customers.list().data == []
    assert stripe_fake.event_types() == []

    customer = stripe_client.v1.customers.create(params={"email": "ada@example.com"})
    with pytest.raises(stripe.InvalidRequestError) as err:
        stripe_client.v1.customers.update(customer.id, params=_any({"nmae": "Ada"}))
    _assert_unknown(err, "nmae")
    assert stripe_client.v1.customers.retrieve(customer.id).name is None


def test_misspelt_nested_param_is_rejected_with_its_bracketed_name(
    stripe_fake: StripeFake, stripe_client: stripe.StripeClient
) -> None:
    client = stripe_client
    customer = _customer_with_card(client)
    price = _price(client)
    items = _any([{"price": price.id}, {"pricee": price.id}])
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.create(params={"customer": customer.id, "items": items})
    _assert_unknown(err, "items[1][pricee]")
    assert client.v1.subscriptions.list().data == []
    assert client.v1.invoices.list().data == []

    settings = _any({"default_payment_methd": "pm_x"})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.update(customer.id, params={"invoice_settings": settings})
    _assert_unknown(err, "invoice_settings[default_payment_methd]")

    recurring = _any({"intervall": "month"})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.prices.create(
            params={
                "currency": "usd",
                "unit_amount": 1,
                "recurring": recurring,
                "product_data": {"name": "x"},
            }
        )
    _assert_unknown(err, "recurring[intervall]")


def test_several_unknown_params_are_named_together() -> None:
    allow = Allow(CustomerCreateParams)
    allow.check({"email": "a@example.com", "metadata": {"any": "thing"}})
    with pytest.raises(StripeError) as err:
        allow.check({"emial": "x", "email": "y", "invoice_settings": {"footr": "z"}})
    assert err.value.code == "parameter_unknown"
    assert err.value.param == "emial"
    assert err.value.message == "Received unknown parameters: emial, invoice_settings[footr]"


def test_known_but_unmodelled_params_are_accepted(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = client.v1.customers.create(
        params={
            "email": "unmodelled@example.com",
            "description": "kept",
            "tax_exempt": "none",
            "business_name": "Ada Ltd",
            "invoice_settings": {
                "footer": "Thanks",
                "rendering_options": {"amount_tax_display": ""},
            },
        }
    )
    assert customer.description == "kept"
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    price = _price(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id, "quantity": 2, "tax_rates": []}],
            "default_payment_method": pm.id,
            "payment_behavior": "allow_incomplete",
            "proration_behavior": "none",
            "off_session": True,
            "payment_settings": {"save_default_payment_method": "on_subscription"},
        }
    )
    assert sub.status == "active"
    updated = client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": sub["items"].data[0].id, "quantity": 3}],
            "proration_behavior": "create_prorations",
            "proration_date": 0,
        },
    )
    assert updated["items"].data[0].quantity == 3
    canceled = client.v1.subscriptions.cancel(
        sub.id, params={"invoice_now": False, "prorate": False}
    )
    assert canceled.status == "canceled"


def test_metadata_keys_are_free_form(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    customer = client.v1.customers.create(
        params={"metadata": {"pricee": "1", "emial": "2", "0": "zero"}}
    )
    assert customer.metadata is not None
    assert customer.metadata.to_dict() == {"pricee": "1", "emial": "2", "0": "zero"}
    customer = _customer_with_card(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": _price(client).id, "metadata": {"anything": "goes"}}],
            "metadata": {"tenant": "t1"},
        }
    )
    assert sub.metadata.to_dict() == {"tenant": "t1"}


def test_metadata_keys_survive_the_form_encoding(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    odd = {"order no.": "1", "a=b&c": "2", "ünï cödé": "3", "metadata": "4", "0": "5", "x y": ""}
    customer = client.v1.customers.create(params={"metadata": odd})
    assert customer.metadata is not None
    assert customer.metadata.to_dict() == {k: v for k, v in odd.items() if v}


@pytest.mark.parametrize("key", ["a[b]", "tier [gold]", "x]", "[y", "a]b", "[]"])
def test_metadata_keys_with_square_brackets_are_refused_as_on_stripe(
    stripe_client: stripe.StripeClient, key: str
) -> None:
    """Stripe: keys "can contain any characters with one exception: you can't use square
    brackets". Its parser reads ``metadata[a[b]]`` as a nested hash and refuses the request;
    the fake must not store a garbled key (it used to keep ``a[b`` for ``a[b]``)."""
    client = stripe_client
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.create(params={"metadata": {"fine": "1", key: "v"}})
    assert (err.value.http_status, err.value.param) == (400, "metadata")
    assert f"'{key}'" in str(err.value.user_message)
    assert client.v1.customers.list().data == []

    customer = client.v1.customers.create(params={"metadata": {"fine": "1"}})
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.update(customer.id, params={"metadata": {key: ""}})
    assert err.value.param == "metadata"
    price = _price(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.create(
            params={
                "customer": _customer_with_card(client).id,
                "items": [{"price": price.id, "metadata": {key: "v"}}],
            }
        )
    assert err.value.param == "items[0][metadata]"
    assert client.v1.customers.retrieve(customer.id).metadata.to_dict() == {"fine": "1"}


def test_nested_metadata_values_are_refused(stripe_client: stripe.StripeClient) -> None:
    # ``{"a": {"b": "v"}}`` goes out as ``metadata[a][b]=v``, ``["x"]`` as ``metadata[a][0]=x``
    for value in ({"b": "v"}, ["x"]):
        with pytest.raises(stripe.InvalidRequestError) as err:
            stripe_client.v1.customers.create(params={"metadata": _any({"a": value})})
        assert (err.value.http_status, err.value.param) == (400, "metadata")


def test_decode_keeps_free_form_keys_whole() -> None:
    raw = (
        "metadata[a[b]]=1&metadata[x]]=2&metadata[[y]=3&items[0][price]=p"
        "&items[0][metadata][c]d]=4&payload[e[f]]=5&expand[0]=customer&created[gte]=0"
    )
    assert decode(raw) == {
        "metadata": {"a[b]": "1", "x]": "2", "[y": "3"},
        "items": [{"price": "p", "metadata": {"c]d": "4"}}],
        "payload": {"e[f]": "5"},
        "expand": ["customer"],
        "created": {"gte": "0"},
    }


def test_list_query_params_are_checked_too(stripe_client: stripe.StripeClient) -> None:
    client = stripe_client
    ids = [client.v1.customers.create(params={"email": f"l{i}@example.com"}).id for i in range(3)]
    page = client.v1.customers.list(
        params={
            "limit": 1,
            "starting_after": ids[2],
            "created": {"gte": 0},
            "expand": ["data.invoice_settings.default_payment_method"],
        }
    )
    assert [c.id for c in page.data] == [ids[1]]
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.list(params=_any({"limt": 1}))
    _assert_unknown(err, "limt")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.list(params={"created": _any({"gtee": 0})})
    _assert_unknown(err, "created[gtee]")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.subscriptions.list(params=_any({"customr": ids[0]}))
    _assert_unknown(err, "customr")
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.customers.retrieve(ids[0], params=_any({"expnd": ["x"]}))
    _assert_unknown(err, "expnd")


def test_raw_form_and_query_params(stripe_fake: StripeFake) -> None:
    """The wire format as Stripe sees it, including the query string of a POST."""

    def call(method: str, path: str, body: str = "") -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(  # noqa: S310 (loopback test server)
            stripe_fake.base_url + path,
            data=body.encode() if method == "POST" else None,
            headers={"Authorization": f"Bearer {stripe_fake.api_key}"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read())

    status, body = call("POST", "/v1/customers?emial=x", "email=a%40example.com")
    assert status == 400
    assert body["error"]["param"] == "emial"
    assert body["error"]["doc_url"] == "https://stripe.com/docs/error-codes/parameter-unknown"
    status, body = call("POST", "/v1/customers", "expand[]=invoice_settings.default_payment_method")
    assert status == 200
    status, body = call("GET", "/v1/customers?" + urllib.parse.urlencode({"limit": 3}))
    assert status == 200
    status, body = call("DELETE", "/v1/customers/cus_missing?bogus=1")
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400,
        "parameter_unknown",
        "bogus",
    )


def test_an_unknown_param_is_not_stored_under_the_idempotency_key(
    stripe_client: stripe.StripeClient,
) -> None:
    bad = _any({"emial": "a@example.com"})
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.customers.create(params=bad, options={"idempotency_key": "k-param"})
    # Validation failed before the endpoint ran, so the key is still free (as on Stripe).
    fixed = stripe_client.v1.customers.create(
        params={"email": "a@example.com"}, options={"idempotency_key": "k-param"}
    )
    assert fixed.email == "a@example.com"


def test_renamed_params_follow_the_pinned_api_version(stripe_client: stripe.StripeClient) -> None:
    # ``payment_method_types`` became ``allowed_payment_method_types`` on SetupIntents.
    with pytest.raises(stripe.InvalidRequestError) as err:
        stripe_client.v1.setup_intents.create(params=_any({"payment_method_types": ["card"]}))
    _assert_unknown(err, "payment_method_types")
    si = stripe_client.v1.setup_intents.create(params={"allowed_payment_method_types": ["card"]})
    assert si.payment_method_types == ["card"]


def test_control_endpoints_are_not_checked(stripe_fake: StripeFake) -> None:
    assert post_control(stripe_fake.base_url, "/_fake/webhooks/drain", timeout=1) is not None


def test_every_route_declares_an_allow_list_with_what_the_fake_reads() -> None:
    routes = {
        (route.method, route.path): route.params
        for module in fake_app._MODULES
        for route in module.routes.entries
    }
    assert len(routes) > 70
    for (method, path), allow in routes.items():
        assert isinstance(allow, Allow), (method, path)
        assert allow.classes, (method, path)  # generated from stripe.params, not hand-written
        assert "expand[]" in allow.names(), (method, path)
    # A sample of the nested names the fake interprets.
    expected = {
        ("POST", "/v1/subscriptions"): [
            "items[].price",
            "items[].quantity",
            "items[].metadata.*",
            "trial_settings.end_behavior.missing_payment_method",
            "metadata.*",
            "payment_behavior",
            "proration_behavior",
        ],
        ("POST", "/v1/subscriptions/{id}"): ["items[].id", "items[].deleted", "trial_end"],
        ("POST", "/v1/customers/{id}"): [
            "invoice_settings.default_payment_method",
            "address.line1",
        ],
        ("POST", "/v1/customers"): ["tax_id_data[].type", "payment_method", "description"],
        ("POST", "/v1/prices"): [
            "recurring.interval",
            "recurring.meter",
            "tiers[].up_to",
            "transform_quantity.divide_by",
            "product_data.name",
        ],
        ("GET", "/v1/prices"): ["lookup_keys[]", "limit", "starting_after", "ending_before"],
        ("POST", "/v1/invoices/create_preview"): ["subscription_details.items[].price"],
        ("POST", "/v1/billing/meter_events"): ["payload.*", "identifier"],
        ("GET", "/v1/events"): ["types[]", "created.gte"],
    }
    for route, names in expected.items():
        allowed = set(routes[route].names())
        assert not set(names) - allowed, route


def test_allow_list_helpers() -> None:
    allow = Allow(PriceCreateParams, SubscriptionCreateParams, extra=("items[].x_fake", "meta.*"))
    names = allow.names()
    assert "items[].x_fake" in names
    assert "meta.*" in names
    assert "api_key" not in names  # request options travel as headers, not parameters
    assert "idempotency_key" not in names
    allow.check({"items": [{"price": "p", "x_fake": "1"}], "meta": {"k": "v"}, "nickname": "n"})
    with pytest.raises(StripeError) as err:
        allow.check({"items": [{"price": "p"}, {"price": "q", "y": "1"}]})
    assert err.value.param == "items[1][y]"
    assert repr(allow) == (
        "Allow(PriceCreateParams, SubscriptionCreateParams, 'items[].x_fake', 'meta.*')"
    )
