"""The JSON API's objects: machine values for a tenant's own UI, beside our words.

Each object carries the facts as machines want them (amounts in the currency's smallest
unit with the currency, ISO 8601 UTC times, status enums) and a ``display`` object with
the very strings the HTML page shows in the session's language, made by the same
presenters. The facts come from the same mirror reads as the pages (``mirror``).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from billfold.http.responses import iso
from portal_web import presenters
from portal_web.mirror import (
    Invoice,
    InvoicePage,
    Item,
    PaymentMethod,
    Profile,
    Subscription,
    Usage,
)

Json = dict[str, Any]

# The portal session's section settings (session-api's names), in the portal's order.
SECTION_KEYS = ("subscriptions", "invoices", "payment_methods", "usage", "profile")
# What each permission flag allows; a tenant's UI shows an action only when listed.
ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("subscriptions", "allow_cancel"): ("subscription.cancel", "subscription.resume"),
    ("payment_methods", "allow_update"): (
        "payment_method.update",
        "payment_method.set_default",
        "payment_method.remove",
    ),
    ("profile", "allow_edit"): ("profile.edit",),
}


def _decimal_text(value: Decimal | int | str | None) -> str | None:
    if value is None:
        return None
    text = format(Decimal(value).normalize(), "f")
    return text


def _integral(value: Decimal | None) -> int | None:
    if value is None or value != value.to_integral_value():
        return None
    return int(value)


def sections(settings: dict[str, dict[str, bool]]) -> Json:
    """Every section's flags, each defaulting to off when the session does not say."""
    out: Json = {}
    for key in SECTION_KEYS:
        flags = settings.get(key, {})
        out[key] = {flag: bool(value) for flag, value in flags.items()}
        out[key].setdefault("enabled", False)
    return out


def actions(settings: dict[str, dict[str, bool]]) -> list[str]:
    allowed: list[str] = []
    for (section, flag), names in ACTIONS.items():
        flags = settings.get(section, {})
        if flags.get("enabled") and flags.get(flag):
            allowed.extend(names)
    return allowed


# --- Plan ---------------------------------------------------------------------------------


def _tier(tier: dict[str, Any]) -> Json:
    up_to = tier.get("up_to")
    unit = tier.get("unit_amount_decimal") or tier.get("unit_amount")
    flat = tier.get("flat_amount_decimal") or tier.get("flat_amount")
    return {
        "up_to": int(up_to) if up_to is not None else None,
        "unit_amount_decimal": _decimal_text(unit),
        "flat_amount_decimal": _decimal_text(flat),
    }


def _item(item: Item) -> Json:
    return {
        "product": item.product_name,
        "price_model": item.price_model,
        "unit_amount": _integral(item.unit_amount),
        "unit_amount_decimal": _decimal_text(item.unit_amount),
        "currency": item.currency,
        "quantity": item.quantity,
        "interval": item.interval,
        "interval_count": item.interval_count,
        "tiers": [_tier(t) for t in item.tiers],
    }


def subscription(sub: Subscription, now: datetime) -> Json:
    view = presenters.plan_view(sub, now)
    charge = presenters.upcoming_charge(sub)
    return {
        "id": sub.id,
        "object": "subscription",
        "status": sub.status,
        "currency": sub.currency,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "ends_at": iso(presenters.ending(sub)),
        "canceled_at": iso(sub.canceled_at),
        "ended_at": iso(sub.ended_at),
        "trial_end": iso(sub.trial_end),
        "current_period_start": iso(sub.current_period_start),
        "current_period_end": iso(sub.current_period_end),
        "next_charge": (
            {"at": iso(charge.at), "amount": charge.amount, "currency": charge.currency}
            if charge is not None
            else None
        ),
        "items": [_item(i) for i in sub.items],
        "display": {
            "status": asdict(view.badge),
            "lines": [
                {
                    "product": line.product,
                    "price": line.price,
                    "tiers": [asdict(t) for t in line.tiers],
                }
                for line in view.lines
            ],
            "period": view.period,
            "next_charge": view.next_charge,
            "ends": view.ends,
        },
    }


# --- Invoices -----------------------------------------------------------------------------


def invoice(inv: Invoice, now: datetime) -> Json:
    view = presenters.invoice_view(inv, now)
    return {
        "id": inv.id,
        "object": "invoice",
        "number": inv.number,
        "status": presenters.invoice_state(inv, now),
        "stripe_status": inv.status,
        "days_overdue": presenters.days_overdue(inv, now),
        "created": iso(inv.created),
        "due_date": iso(inv.due_date),
        "total": inv.total,
        "amount_remaining": inv.amount_remaining,
        "currency": inv.currency,
        "hosted_invoice_url": view.view_url,
        "invoice_pdf": view.pdf_url,
        "display": {
            "number": view.number,
            "issued": view.issued,
            "due": view.due,
            "amount": view.amount,
            "status": asdict(view.badge),
        },
    }


def invoice_list(page: InvoicePage, per_page: int, now: datetime, url: str) -> Json:
    return {
        "object": "list",
        "url": url,
        "data": [invoice(i, now) for i in page.invoices],
        "page": page.page,
        "pages": page.pages,
        "per_page": per_page,
        "total_count": page.total,
        "has_more": page.page < page.pages,
    }


# --- Payment methods, usage, profile ------------------------------------------------------


def payment_method(pm: PaymentMethod) -> Json:
    view = presenters.payment_method_view(pm)
    card = None
    if pm.type == "card":
        card = {
            "brand": pm.card_brand,
            "last4": pm.card_last4,
            "exp_month": pm.card_exp_month,
            "exp_year": pm.card_exp_year,
        }
    return {
        "id": pm.id,
        "object": "payment_method",
        "type": pm.type,
        "is_default": pm.is_default,
        "card": card,
        "display": {"label": view.label, "expires": view.expires},
    }


def usage(u: Usage) -> Json:
    view = presenters.usage_view(u)
    return {
        "object": "usage",
        "meter": u.meter_name,
        "value": _decimal_text(u.value),
        "period_start": iso(u.period_start),
        "period_end": iso(u.period_end),
        "daily": [{"day": d.isoformat(), "value": _decimal_text(v)} for d, v in u.daily],
        "display": {"meter": view.meter, "value": view.value, "period": view.period},
    }


_ADDRESS_FIELDS = ("line1", "line2", "city", "postal_code", "state", "country")


def profile(p: Profile) -> Json:
    view = presenters.profile_view(p)
    address = None
    if p.address:
        address = {k: (str(p.address[k]) if p.address.get(k) else None) for k in _ADDRESS_FIELDS}
    return {
        "object": "profile",
        "name": p.name,
        "email": p.email,
        "phone": p.phone,
        "address": address,
        "tax_ids": [
            {"type": str(t.get("type", "")), "value": str(t.get("value", ""))} for t in p.tax_ids
        ],
        "display": {
            "address": view.address,
            "tax_ids": [{"type": kind, "value": value} for kind, value in view.tax_ids],
        },
    }


def list_of(url: str, data: list[Json]) -> Json:
    return {"object": "list", "url": url, "data": data, "has_more": False}
