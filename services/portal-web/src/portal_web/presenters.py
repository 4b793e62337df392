"""What each section says, in the page's language, and the facts it says it from.

Templates only lay these out; every word and number is decided here (and so tested
without a browser). The JSON API (``api_views``) gives the same facts as machine values
(``ending``, ``upcoming_charge``, ``invoice_state``…) beside these same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from babel.numbers import format_decimal

from portal_web.formatting import date, day, money
from portal_web.i18n import current, ngettext
from portal_web.i18n import gettext as _
from portal_web.mirror import Invoice, Item, PaymentMethod, Profile, Subscription, Usage

# --- Plan ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Badge:
    text: str
    tone: str  # ok, info, warn, bad, muted: a CSS class; the words carry the meaning


@dataclass(frozen=True, slots=True)
class TierRow:
    range: str
    price: str


@dataclass(frozen=True, slots=True)
class PriceLine:
    product: str
    price: str  # "€49.00 / month", "5 seats × $12.00 / month", "Tiered, per month"  # noqa: RUF003
    tiers: list[TierRow]


@dataclass(frozen=True, slots=True)
class PlanView:
    id: str
    lines: list[PriceLine]
    badge: Badge
    period: str | None
    next_charge: str | None
    ends: str | None
    # What the customer may do with it (the session's permissions decide whether the
    # page offers it): cancel at period end, or undo that / resume a paused one.
    cancellable: bool = False
    resumable: bool = False
    title: str = ""
    auto_pay: bool | None = None  # None: not a subscription that is billed
    paused: str | None = None  # what a pause means for the customer, and how it ends


def interval_text(interval: str | None, count: int) -> str:
    if interval == "day":
        return ngettext("day", "%(num)d days", count) % {"num": count}
    if interval == "week":
        return ngettext("week", "%(num)d weeks", count) % {"num": count}
    if interval == "month":
        return ngettext("month", "%(num)d months", count) % {"num": count}
    if interval == "year":
        return ngettext("year", "%(num)d years", count) % {"num": count}
    return ""


def _per(amount: str, item: Item) -> str:
    interval = interval_text(item.interval, item.interval_count)
    if not interval:
        return amount
    return _("%(amount)s / %(interval)s") % {"amount": amount, "interval": interval}


def _tier_amount(tier: dict[str, Any], currency: str) -> str:
    unit = tier.get("unit_amount_decimal") or tier.get("unit_amount")
    flat = tier.get("flat_amount_decimal") or tier.get("flat_amount")
    parts = []
    if unit is not None and Decimal(unit) != 0:
        parts.append(_("%(amount)s per unit") % {"amount": money(Decimal(unit), currency)})
    if flat is not None and Decimal(flat) != 0:
        parts.append(_("%(amount)s flat fee") % {"amount": money(Decimal(flat), currency)})
    return " + ".join(parts) or money(0, currency)


def tier_rows(item: Item) -> list[TierRow]:
    rows: list[TierRow] = []
    start = 1
    currency = item.currency or ""
    for tier in item.tiers:
        up_to = tier.get("up_to")
        if up_to is None:
            label = _("%(start)d and above") % {"start": start}
        else:
            label = _("%(start)d to %(end)d") % {"start": start, "end": int(up_to)}
        rows.append(TierRow(range=label, price=_tier_amount(tier, currency)))
        if up_to is not None:
            start = int(up_to) + 1
    return rows


def price_line(item: Item) -> PriceLine:
    product = item.product_name or _("Subscription")
    currency = item.currency or ""
    unit = money(item.unit_amount, currency) if item.unit_amount is not None else ""
    tiers: list[TierRow] = []
    if item.price_model in ("graduated", "volume"):
        interval = interval_text(item.interval, item.interval_count)
        if item.price_model == "graduated":
            price = _("Tiered price, per %(interval)s") % {"interval": interval}
        else:
            price = _("Volume price, per %(interval)s") % {"interval": interval}
        if item.quantity > 1:
            price = _("%(quantity)d units, %(price)s") % {"quantity": item.quantity, "price": price}
        tiers = tier_rows(item)
    elif item.price_model == "metered":
        price = _per(_("%(amount)s per unit used") % {"amount": unit}, item)
    elif item.price_model == "per_unit" or item.quantity > 1:
        seats = ngettext("%(num)d seat", "%(num)d seats", item.quantity) % {"num": item.quantity}
        times = _("%(seats)s × %(amount)s")  # noqa: RUF001 - the multiplication sign
        price = _per(times % {"seats": seats, "amount": unit}, item)
    else:
        price = _per(unit, item)
    return PriceLine(product=product, price=price, tiers=tiers)


def badge(sub: Subscription, now: datetime) -> Badge:
    if sub.status == "canceled" or (sub.ended_at is not None and sub.ended_at <= now):
        return Badge(_("Canceled"), "muted")
    ends = sub.cancel_at or (sub.current_period_end if sub.cancel_at_period_end else None)
    if ends is not None:
        return Badge(_("Cancels %(date)s") % {"date": date(ends, style="medium")}, "warn")
    if is_live(sub) and sub.status != "paused" and sub.pause_collection is not None:
        if sub.pause_collection_resumes_at is not None:
            return Badge(
                _("Payments paused until %(date)s")
                % {"date": date(sub.pause_collection_resumes_at, style="medium")},
                "muted",
            )
        return Badge(_("Payments paused"), "muted")
    if sub.status == "trialing":
        if sub.trial_end is not None:
            return Badge(
                _("Trial ends %(date)s") % {"date": date(sub.trial_end, style="medium")}, "info"
            )
        return Badge(_("Trial"), "info")
    if sub.status == "active":
        return Badge(_("Active"), "ok")
    if sub.status == "past_due":
        return Badge(_("Past due"), "bad")
    if sub.status == "unpaid":
        return Badge(_("Unpaid"), "bad")
    if sub.status == "paused":
        if sub.paused_at is not None:
            return Badge(
                _("Paused since %(date)s") % {"date": date(sub.paused_at, style="medium")},
                "muted",
            )
        return Badge(_("Paused"), "muted")
    if sub.status == "incomplete":
        return Badge(_("Awaiting payment"), "warn")
    if sub.status == "incomplete_expired":
        return Badge(_("Expired"), "muted")
    return Badge(sub.status, "muted")


def is_live(sub: Subscription) -> bool:
    return sub.status not in ("canceled", "incomplete_expired")


def ending(sub: Subscription) -> datetime | None:
    """When a live plan set to cancel ends (None when it renews)."""
    if not is_live(sub):
        return None
    return sub.cancel_at or (sub.current_period_end if sub.cancel_at_period_end else None)


@dataclass(frozen=True, slots=True)
class Charge:
    at: datetime
    amount: int  # the currency's smallest unit
    currency: str


def collection_paused(sub: Subscription) -> bool:
    return is_live(sub) and sub.status != "paused" and sub.pause_collection is not None


def upcoming_charge(sub: Subscription) -> Charge | None:
    """The next charge of a plan that renews; none for one that ends or has ended, nor
    while its payments are paused past that date (the invoice is made, not charged)."""
    if not is_live(sub) or ending(sub) is not None:
        return None
    currency = sub.next_charge_currency or sub.currency
    if sub.next_charge_at is None or sub.next_charge_amount is None or not currency:
        return None
    if collection_paused(sub) and (
        sub.pause_collection_resumes_at is None
        or sub.pause_collection_resumes_at > sub.next_charge_at
    ):
        return None
    return Charge(sub.next_charge_at, sub.next_charge_amount, currency)


def plan_view(sub: Subscription, now: datetime) -> PlanView:
    period = None
    if is_live(sub) and sub.current_period_start is not None and sub.current_period_end:
        period = _("%(start)s to %(end)s") % {
            "start": date(sub.current_period_start),
            "end": date(sub.current_period_end),
        }
    ends = None
    ends_at = ending(sub)
    if not is_live(sub):
        if sub.ended_at is not None:
            ends = _("Ended on %(date)s") % {"date": date(sub.ended_at)}
    elif ends_at is not None:
        ends = _("Your plan stays active until %(date)s, then it ends.") % {"date": date(ends_at)}
    charge = upcoming_charge(sub)
    next_charge = None
    if charge is not None:
        next_charge = _("%(amount)s on %(date)s") % {
            "amount": money(charge.amount, charge.currency),
            "date": date(charge.at),
        }
    lines = [price_line(i) for i in sub.items]
    live = is_live(sub)
    return PlanView(
        id=sub.id,
        lines=lines,
        badge=badge(sub, now),
        period=period,
        next_charge=next_charge,
        ends=ends,
        cancellable=live
        and sub.status != "paused"
        and ends_at is None
        and sub.status not in ("incomplete",),
        resumable=live
        and (
            sub.status == "paused"
            or collection_paused(sub)
            or (sub.cancel_at_period_end and ends_at is not None)
        ),
        title=", ".join(line.product for line in lines) or _("Subscription"),
        auto_pay=(sub.collection_method != "send_invoice") if live else None,
        paused=paused_text(sub),
    )


def paused_text(sub: Subscription) -> str | None:
    """What a paused plan means, said beside its Resume button."""
    if not is_live(sub):
        return None
    if sub.status == "paused":
        if sub.paused_reason == "trial_end_without_payment_method":
            return _(
                "Your trial ended without a card, so your plan is paused and nothing is "
                "charged. Add a card, then resume: a new period starts today and is charged now."
            )
        return _(
            "Your plan is paused and nothing is charged. Resuming starts a new period today "
            "and charges it now."
        )
    if not collection_paused(sub):
        return None
    if sub.pause_collection_resumes_at is not None:
        return _("Payments are paused: nothing is charged until %(date)s, or until you resume.") % {
            "date": date(sub.pause_collection_resumes_at)
        }
    return _("Payments are paused: nothing is charged until you resume.")


def cancel_text(sub: Subscription) -> str:
    """What cancelling does, said before the customer confirms it."""
    if sub.current_period_end is not None:
        return _("Your plan stays active until %(date)s, then it ends.") % {
            "date": date(sub.current_period_end)
        }
    return _("Your plan ends at the end of the current period.")


# --- Invoices -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvoiceView:
    id: str
    number: str
    issued: str
    due: str
    amount: str
    badge: Badge
    view_url: str | None
    pdf_url: str | None
    payable: bool = False


InvoiceState = Literal["paid", "void", "overdue", "open"]


def invoice_state(inv: Invoice, now: datetime) -> InvoiceState:
    """What the customer is told: Paid, Void, Overdue (due date passed) or Open."""
    if inv.status == "paid":
        return "paid"
    if inv.status == "void":
        return "void"
    if inv.due_date is not None and inv.due_date < now:
        return "overdue"
    return "open"


def days_overdue(inv: Invoice, now: datetime) -> int | None:
    if invoice_state(inv, now) != "overdue" or inv.due_date is None:
        return None
    return max(1, (now - inv.due_date).days)


def invoice_badge(inv: Invoice, now: datetime) -> Badge:
    state = invoice_state(inv, now)
    if state == "paid":
        return Badge(_("Paid"), "ok")
    if state == "void":
        return Badge(_("Void"), "muted")
    days = days_overdue(inv, now)
    if days is not None:
        return Badge(
            ngettext("Overdue by %(num)d day", "Overdue by %(num)d days", days) % {"num": days},
            "bad",
        )
    return Badge(_("Open"), "info")


_LOOPBACK = ("http://127.0.0.1:", "http://localhost:", "http://127.0.0.1/", "http://localhost/")


def hosted_link(url: str | None) -> str | None:
    """Only Stripe-hosted https links become hrefs: a javascript: URL in the mirror must
    never turn into a link (autoescaping does not stop that). Plain http only on the
    loopback host (a Stripe stand-in on the customer's own machine: local runs, tests)."""
    if not url:
        return None
    return url if url.startswith("https://") or url.startswith(_LOOPBACK) else None


def invoice_view(inv: Invoice, now: datetime) -> InvoiceView:
    return InvoiceView(
        id=inv.id,
        number=inv.number or "—",
        issued=date(inv.created, style="medium"),
        due=date(inv.due_date, style="medium"),
        amount=money(inv.total, inv.currency),
        badge=invoice_badge(inv, now),
        view_url=hosted_link(inv.hosted_invoice_url),
        pdf_url=hosted_link(inv.invoice_pdf),
        payable=inv.status in ("open", "uncollectible") and (inv.amount_remaining or 0) > 0,
    )


# --- Payment methods, usage, profile ------------------------------------------------------

_BRANDS = {
    "visa": "Visa",
    "mastercard": "Mastercard",
    "amex": "American Express",
    "discover": "Discover",
    "jcb": "JCB",
    "diners": "Diners Club",
    "unionpay": "UnionPay",
    "cartes_bancaires": "Cartes Bancaires",
}


def _type_label(kind: str) -> str:
    labels = {
        "sepa_debit": "SEPA Direct Debit",
        "bacs_debit": "Bacs Direct Debit",
        "us_bank_account": _("US bank account"),
        "link": "Link",
        "paypal": "PayPal",
    }
    return labels.get(kind, kind.replace("_", " ").capitalize())


@dataclass(frozen=True, slots=True)
class PaymentMethodView:
    id: str
    label: str  # "Visa •••• 4242"
    expires: str | None  # "Expires 12/2027"
    is_default: bool


def payment_method_view(pm: PaymentMethod) -> PaymentMethodView:
    if pm.type == "card":
        brand = _BRANDS.get(pm.card_brand or "", (pm.card_brand or _("Card")).title())
        label = f"{brand} •••• {pm.card_last4}" if pm.card_last4 else brand
        expires = None
        if pm.card_exp_month and pm.card_exp_year:
            expires = _("Expires %(date)s") % {
                "date": f"{pm.card_exp_month:02d}/{pm.card_exp_year}"
            }
        return PaymentMethodView(pm.id, label=label, expires=expires, is_default=pm.is_default)
    label = _type_label(pm.type)
    return PaymentMethodView(pm.id, label=label, expires=None, is_default=pm.is_default)


@dataclass(frozen=True, slots=True)
class Bar:
    """One day's bar in the usage chart, in the chart's own units (``CHART_HEIGHT`` high,
    ``BAR_STEP`` per day): SVG attributes, since the page's CSP allows no inline style."""

    x: int
    y: float
    width: int
    height: float
    label: str  # "Nov 18: 1,204"


@dataclass(frozen=True, slots=True)
class UsageChart:
    bars: list[Bar]
    width: int  # the viewBox width
    height: int
    summary: str  # the chart in one sentence, for screen readers
    first_day: str
    last_day: str
    peak: str  # the highest day's value, labelling the top of the chart


@dataclass(frozen=True, slots=True)
class UsageView:
    meter: str
    value: str
    period: str
    chart: UsageChart | None  # None: no daily numbers mirrored (yet)


CHART_HEIGHT, BAR_STEP, BAR_WIDTH = 100, 10, 7


def _chart(u: Usage, meter: str) -> UsageChart | None:
    if not u.daily:
        return None
    locale = current().locale
    peak = max(v for _, v in u.daily)
    bars = []
    for n, (when, value) in enumerate(u.daily):
        # A day with any usage gets a visible sliver, however small next to the peak.
        height = 0.0 if peak <= 0 or value <= 0 else max(1.5, float(value / peak) * CHART_HEIGHT)
        shown = format_decimal(value, locale=locale)
        bars.append(
            Bar(
                x=n * BAR_STEP,
                y=round(CHART_HEIGHT - height, 2),
                width=BAR_WIDTH,
                height=round(height, 2),
                label=f"{day(when)}: {shown}",
            )
        )
    busiest = max(u.daily, key=lambda d: d[1])
    summary = _("%(meter)s per day, %(start)s to %(end)s; highest %(value)s on %(day)s") % {
        "meter": meter,
        "start": day(u.daily[0][0]),
        "end": day(u.daily[-1][0]),
        "value": format_decimal(busiest[1], locale=locale),
        "day": day(busiest[0]),
    }
    return UsageChart(
        bars=bars,
        width=len(bars) * BAR_STEP - (BAR_STEP - BAR_WIDTH),
        height=CHART_HEIGHT,
        summary=summary,
        first_day=day(u.daily[0][0]),
        last_day=day(u.daily[-1][0]),
        peak=format_decimal(peak, locale=locale),
    )


def usage_view(u: Usage) -> UsageView:
    meter = u.meter_name or _("Usage")
    return UsageView(
        meter=meter,
        value=format_decimal(u.value, locale=current().locale),
        period=_("%(start)s to %(end)s")
        % {
            "start": date(u.period_start, style="medium"),
            "end": date(u.period_end, style="medium"),
        },
        chart=_chart(u, meter),
    )


@dataclass(frozen=True, slots=True)
class ProfileView:
    name: str | None
    email: str | None
    phone: str | None
    address: list[str]
    tax_ids: list[tuple[str, str]]


def _address_lines(address: dict[str, Any] | None) -> list[str]:
    if not address:
        return []
    city = " ".join(str(address[k]) for k in ("postal_code", "city") if address.get(k))
    country = address.get("country")
    country_name = None
    if isinstance(country, str) and country:
        country_name = current().locale.territories.get(country.upper(), country)
    lines = [address.get("line1"), address.get("line2"), city, address.get("state"), country_name]
    return [str(line) for line in lines if line]


def profile_view(p: Profile) -> ProfileView:
    return ProfileView(
        name=p.name,
        email=p.email,
        phone=p.phone,
        address=_address_lines(p.address),
        tax_ids=[
            (str(t.get("type", "")).replace("_", " ").upper(), str(t.get("value", "")))
            for t in p.tax_ids
        ],
    )
