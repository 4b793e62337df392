"""The fake's shapes against the installed ``stripe`` library's typed resource classes.

The library's classes are generated from Stripe's OpenAPI spec for the API version it pins,
so their annotated fields are today's fields, newer than the published examples the templates
started from. Every field the library annotates is in the fake's objects, except those in
:data:`NOT_SERVED`: fields that Stripe itself leaves out of an object unless some condition
holds (an ``expand[]``, a mode, a payment method type...), each listed with that condition.
``tests/test_stripe_fake_library_shapes.py`` checks both directions.
"""

from __future__ import annotations

import typing
from typing import Any

import stripe

#: shapes name -> the library's class for it (deleted variants use the same class)
CLASSES: dict[str, type[stripe.StripeObject]] = {
    "billing.meter": stripe.billing.Meter,
    "billing.meter_event": stripe.billing.MeterEvent,
    "billing.meter_event_summary": stripe.billing.MeterEventSummary,
    "checkout.session": stripe.checkout.Session,
    "customer": stripe.Customer,
    "event": stripe.Event,
    "invoice": stripe.Invoice,
    "invoice_payment": stripe.InvoicePayment,
    "line_item": stripe.InvoiceLineItem,
    "payment_intent": stripe.PaymentIntent,
    "payment_method": stripe.PaymentMethod,
    "plan": stripe.Plan,
    "price": stripe.Price,
    "product": stripe.Product,
    "setup_intent": stripe.SetupIntent,
    "subscription": stripe.Subscription,
    "subscription_item": stripe.SubscriptionItem,
    "tax_id": stripe.TaxId,
    "test_helpers.test_clock": stripe.test_helpers.TestClock,
    "webhook_endpoint": stripe.WebhookEndpoint,
}


def literal_values(annotation: Any) -> set[str]:
    """The string literals a (possibly Optional/Union-wrapped) ``Literal`` allows."""
    if typing.get_origin(annotation) is typing.Literal:
        return {str(v) for v in typing.get_args(annotation)}
    return {v for arg in typing.get_args(annotation) for v in literal_values(arg)}


def _other_payment_method_types() -> list[str]:
    annotations = stripe.PaymentMethod.__annotations__
    kinds = literal_values(annotations["type"]) - {"card"}
    return sorted(kinds & set(annotations))


_INCLUDABLE = "includable: Stripe returns it only when asked for with expand[]"
_DELETED = "only on a deleted object (the deleted_* shapes: id, object, deleted)"
_ADAPTIVE = "only with Adaptive Pricing (presentment currency), which the fake doesn't model"
_WHEN_SET = "only when set on create, which the fake doesn't support"
_CONNECT = "only on events from connected accounts or other Stripe contexts"
_PM_TYPE = "a payment method carries only the hash of its own type, and the fake has cards only"

#: resource -> {field the library annotates: why the fake's objects leave it out}
NOT_SERVED: dict[str, dict[str, str]] = {
    "checkout.session": {
        "allowed_payment_method_types": "only when set on create (the fake shows it then)",
        "branding_settings": "only when branding is customised, which the fake doesn't model",
        "excluded_payment_method_types": _WHEN_SET,
        "line_items": _INCLUDABLE + " (and setup-mode sessions have no line items)",
        "name_collection": _WHEN_SET,
        "presentment_details": _ADAPTIVE,
        "redirect_on_completion": "only for ui_mode embedded_page (the fake is hosted_page)",
        "return_url": "only for ui_mode embedded_page or elements (the fake is hosted_page)",
        "tax_id_collection": _WHEN_SET,
    },
    "customer": {
        "business_name": "only when set; the fake doesn't model business or individual names",
        "cash_balance": _INCLUDABLE,
        "deleted": _DELETED,
        "individual_name": "only when set; the fake doesn't model business or individual names",
        "invoice_credit_balance": _INCLUDABLE,
        "sources": _INCLUDABLE,
        "subscriptions": _INCLUDABLE,
        "tax": _INCLUDABLE,
        "tax_ids": _INCLUDABLE + " (served with expand[]=tax_ids)",
    },
    "event": {"account": _CONNECT, "context": _CONNECT},
    "invoice": {
        "amount_paid_off_stripe": _INCLUDABLE + " (served with expand[]; never in events)",
        "confirmation_secret": _INCLUDABLE + " (the fake has no client-side confirmation)",
        "deleted": _DELETED,
        "payments": _INCLUDABLE + " (served with expand[]=payments)",
        "threshold_reason": "only on subscription_threshold invoices (no billing thresholds)",
    },
    "payment_intent": {
        "hooks": _WHEN_SET,
        "payment_details": _WHEN_SET,
        "presentment_details": _ADAPTIVE,
    },
    "payment_method": {
        # Every field named after another payment method type (acss_debit, ideal, ...).
        **{kind: _PM_TYPE for kind in _other_payment_method_types()},
        "radar_options": _WHEN_SET,
    },
    "plan": {"deleted": _DELETED, "tiers": _INCLUDABLE},
    "price": {
        "currency_options": _INCLUDABLE + " (and the fake has one currency per price)",
        "deleted": _DELETED,
        "tiers": _INCLUDABLE + " (served with expand[]=tiers)",
    },
    "product": {"deleted": _DELETED},
    "setup_intent": {"attach_to_self": _WHEN_SET},
    "subscription": {"presentment_details": _ADAPTIVE},
    "subscription_item": {
        "billed_until": "only with billing_mode flexible, which the fake doesn't model",
        "deleted": _DELETED,
    },
    "tax_id": {"deleted": _DELETED},
    "test_helpers.test_clock": {"deleted": _DELETED},
    "webhook_endpoint": {
        "deleted": _DELETED,
        "secret": "only in the response that creates the endpoint",
    },
}


def library_fields(resource: str) -> set[str]:
    """Every field the library's class for ``resource`` annotates (its class constants, such
    as ``OBJECT_NAME``, and private names left out)."""
    cls = CLASSES[resource.removeprefix("deleted_")]
    fields: set[str] = set()
    for klass in cls.__mro__:
        for name, kind in vars(klass).get("__annotations__", {}).items():
            if name.startswith("_") or typing.get_origin(kind) is typing.ClassVar:
                continue
            fields.add(name)
    return fields


def served_fields(resource: str) -> set[str]:
    """The fields the fake's objects of ``resource`` should carry, by the library."""
    if resource.startswith("deleted_"):
        return {"id", "object", "deleted"}
    return library_fields(resource) - set(NOT_SERVED.get(resource, {}))
