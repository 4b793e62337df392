"""``billfold stripe demo``: demo customers created in Stripe, then mirrored like any other.

The demo's billing data is written where a tenant's is: in the site's Stripe account,
through billing-sync's gateway (the only holder of Stripe keys). billing-sync then
mirrors it through the usual path (webhooks, or reconciliation), so the portal shows
what Stripe holds. Works on the fake Stripe and on real Stripe in test mode (test cards
``pm_card_*`` only exist there).

Safe to run again: prices are found by lookup key, and a customer already present
(same ``external_id`` and ``billfold_site`` metadata) is left as it is. Every write
carries an idempotency key derived from what it means.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import stripe

from billing_sync.accounts import SITE_METADATA_KEY
from billing_sync.dbtypes import Conn
from billing_sync.mirror.customers import EXTERNAL_ID_KEY
from billing_sync.stripe_api import idempotency_key, write_options

#: How often :func:`wait_mirrored` looks at the mirror (seconds).
POLL_INTERVAL = 0.2


@dataclass(frozen=True)
class Plan:
    lookup_key: str
    product: str
    currency: str
    price: dict[str, Any]  # unit_amount or tiers, besides currency and recurring


PER_SEAT = Plan("billfold_demo_team_seat", "Team (per seat)", "usd", {"unit_amount": 1200})
TIERED = Plan(
    "billfold_demo_volume_tiered",
    "Volume (tiered)",
    "usd",
    {
        "billing_scheme": "tiered",
        "tiers_mode": "graduated",
        "tiers": [
            {"up_to": 10, "unit_amount": 900, "flat_amount": 1000},
            {"up_to": "inf", "unit_amount": 600},
        ],
    },
)
STARTER = Plan("billfold_demo_starter", "Starter", "usd", {"unit_amount": 2900})
TOKYO = Plan("billfold_demo_starter_jpy", "Starter (JPY)", "jpy", {"unit_amount": 3800})
PLANS = (PER_SEAT, TIERED, STARTER, TOKYO)

#: The demo's billing meter (one per Stripe account, found by its event name) and the
#: metered price on it: API calls at $0.002 each, billed in arrears at renewal.
METER_EVENT = "billfold_demo_api_calls"
METER_NAME = "API calls"
API_CALLS = Plan(
    "billfold_demo_api_calls",
    "API calls",
    "usd",
    {"unit_amount_decimal": "0.2"},  # cents: $0.002 per call
)
#: Meter events per day of the period so far, and the calls each reports (a random walk
#: from a fixed seed, so every run tells the same story).
EVENTS_PER_DAY, CALLS_PER_EVENT = 4, (150, 600)


@dataclass(frozen=True)
class Person:
    external_id: str
    email: str
    name: str
    story: str  # what this customer shows, for the printed summary
    # Days in the past this customer's Stripe test clock starts (0: no test clock).
    clock_days_back: int = 0


#: The first one is the customer `make run` opens the portal for.
PEOPLE = (
    Person(
        "demo-ada",
        "ada@example.com",
        "Ada Lovelace",
        "per-seat plan, 5 seats, two cards, metered API calls (12 days into the period)",
        clock_days_back=12,
    ),
    Person("demo-grace", "grace@example.com", "Grace Hopper", "tiered plan, 12 units"),
    Person("demo-alan", "alan@example.com", "Alan Turing", "trialing (14 days)"),
    Person("demo-katherine", "katherine@example.com", "Katherine Johnson", "cancels at period end"),
    Person("demo-yukihiro", "yukihiro@example.jp", "Yukihiro Matsumoto", "billed in JPY"),
    Person(
        "demo-edsger",
        "edsger@example.com",
        "Edsger Dijkstra",
        "invoiced: one open, one void, one unpaid (card declined)",
    ),
    Person(
        "demo-barbara",
        "barbara@example.com",
        "Barbara Liskov",
        "invoiced, one invoice overdue (on a test clock started 40 days ago)",
        clock_days_back=40,
    ),
)

#: How a test clock is watched while Stripe advances it (seconds).
CLOCK_POLL, CLOCK_WAIT = 1.0, 120.0


@dataclass
class Seeded:
    person: Person
    stripe_id: str
    created: bool
    subscriptions: dict[str, str] = field(default_factory=dict)  # id -> status
    invoices: dict[str, str | None] = field(default_factory=dict)  # id -> status
    # meter id -> usage this run reported (only for a customer created by this run)
    usage: dict[str, Decimal] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "external_id": self.person.external_id,
            "stripe_id": self.stripe_id,
            "email": self.person.email,
            "name": self.person.name,
            "shows": self.person.story,
            "subscriptions": sorted(self.subscriptions.values()),
            "invoices": sorted(s or "" for s in self.invoices.values()),
            "usage": {k: str(v) for k, v in self.usage.items()},
        }


class _Writer:
    """Writes for one site, each with an idempotency key from (site, step, inputs)."""

    def __init__(self, client: stripe.StripeClient, site_id: str) -> None:
        self.v1 = client.v1
        self.site_id = site_id

    def opts(self, step: str, *parts: str) -> stripe.RequestOptions:
        return write_options(idempotency_key(f"demo-{step}", self.site_id, *parts))


async def _price(w: _Writer, plan: Plan) -> str:
    found = await w.v1.prices.list_async(
        params={"lookup_keys": [plan.lookup_key], "active": True, "limit": 1}
    )
    if found.data:
        return str(found.data[0].id)
    params: dict[str, Any] = {
        "currency": plan.currency,
        "recurring": {"interval": "month"},
        "lookup_key": plan.lookup_key,
        "product_data": {"name": plan.product},
        **plan.price,
    }
    # Lookup keys are per account, shared by every site of it: no site in this key.
    price = await w.v1.prices.create_async(
        params=params,  # type: ignore[arg-type]
        options=write_options(idempotency_key("demo-price", plan.lookup_key)),
    )
    return str(price.id)


async def _meter(w: _Writer) -> str:
    """The demo meter: an active one with the demo's event name, else a new one."""
    for meter in (await w.v1.billing.meters.list_async(params={"status": "active"})).data:
        if meter.event_name == METER_EVENT:
            return str(meter.id)
    meter = await w.v1.billing.meters.create_async(
        params={
            "display_name": METER_NAME,
            "event_name": METER_EVENT,
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
            "value_settings": {"event_payload_key": "value"},
        },
        # Per account, like the lookup keys: no site in this key.
        options=write_options(idempotency_key("demo-meter", METER_EVENT)),
    )
    return str(meter.id)


async def _metered_price(w: _Writer, meter_id: str) -> str:
    plan = API_CALLS
    found = await w.v1.prices.list_async(
        params={"lookup_keys": [plan.lookup_key], "active": True, "limit": 1}
    )
    if found.data:
        return str(found.data[0].id)
    price = await w.v1.prices.create_async(
        params={
            "currency": plan.currency,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter_id},
            "lookup_key": plan.lookup_key,
            "product_data": {"name": plan.product},
            "unit_amount_decimal": plan.price["unit_amount_decimal"],
        },
        options=write_options(idempotency_key("demo-price", plan.lookup_key, meter_id)),
    )
    return str(price.id)


async def _report_usage(w: _Writer, customer: str, sub: stripe.Subscription, until: int) -> Decimal:
    """Meter events spread over the subscription's period so far (``until``: now), a few
    a day, as an app reporting its API calls would send them; the total reported.

    Sent once the customer's test clock stands at now, so that every timestamp lies in
    the customer's past (Stripe takes them up to 35 days back). Each event's
    ``identifier`` is derived from the customer and its slot, so a retry never counts twice.
    """
    start = min(int(i.current_period_start) for i in sub["items"].data)
    rng = random.Random(METER_EVENT)  # demo numbers (not secrets), the same on every run
    total = Decimal(0)
    step = 86_400 // EVENTS_PER_DAY
    busy = 1.0
    for n, at in enumerate(range(start + step // 2, until, step)):
        # Weekdays busier than weekends, and a slow trend upwards.
        weekday = time.gmtime(at).tm_wday < 5
        busy = max(0.3, busy + rng.uniform(-0.15, 0.2))
        calls = int(rng.randint(*CALLS_PER_EVENT) * busy * (1.0 if weekday else 0.35))
        await w.v1.billing.meter_events.create_async(
            params={
                "event_name": METER_EVENT,
                "payload": {"stripe_customer_id": customer, "value": str(calls)},
                "identifier": f"billfold-demo-{customer}-{n}",
                "timestamp": at,
            },
            options=w.opts("meter-event", customer, str(n)),
        )
        total += calls
    return total


async def _existing(w: _Writer, person: Person) -> str | None:
    page = await w.v1.customers.list_async(params={"email": person.email, "limit": 100})
    for c in page.data:
        meta = c.metadata.to_dict() if c.metadata else {}
        if meta.get(EXTERNAL_ID_KEY) == person.external_id and (
            meta.get(SITE_METADATA_KEY) == w.site_id
        ):
            return str(c.id)
    return None


async def _card(w: _Writer, customer: str, test_card: str, *, default: bool) -> str:
    pm = await w.v1.payment_methods.attach_async(
        test_card, params={"customer": customer}, options=w.opts("attach", customer, test_card)
    )
    if default:
        await w.v1.customers.update_async(
            customer,
            params={"invoice_settings": {"default_payment_method": pm.id}},
            options=w.opts("default-card", customer, pm.id),
        )
    return pm.id


async def _subscribe(
    w: _Writer, customer: str, step: str, price: str, **extra: Any
) -> stripe.Subscription:
    params: dict[str, Any] = {"customer": customer, "items": [{"price": price}], **extra}
    if "quantity" in extra:
        params["items"] = [{"price": price, "quantity": extra["quantity"]}]
        del params["quantity"]
    return await w.v1.subscriptions.create_async(
        params=params,  # type: ignore[arg-type]
        options=w.opts("subscription", customer, step),
    )


async def _finalized(w: _Writer, sub: stripe.Subscription) -> str | None:
    """The subscription's first invoice, finalized now: Stripe leaves a ``send_invoice``
    subscription's first invoice a draft for about an hour (the fake finalizes it at once)."""
    if not sub.latest_invoice:
        return None
    inv = str(getattr(sub.latest_invoice, "id", sub.latest_invoice))
    if (await w.v1.invoices.retrieve_async(inv)).status == "draft":
        await w.v1.invoices.finalize_invoice_async(inv, options=w.opts("finalize", inv))
    return inv


async def _test_clock(w: _Writer, person: Person) -> str:
    """A test clock frozen ``clock_days_back`` days ago, for this person's customer."""
    clock = await w.v1.test_helpers.test_clocks.create_async(
        params={
            "frozen_time": int(time.time()) - person.clock_days_back * 86_400,
            "name": f"billfold demo {person.external_id}",
        },
        options=w.opts("test-clock", person.external_id),
    )
    return str(clock.id)


async def _advance(w: _Writer, clock_id: str, to: int) -> None:
    """Advance the test clock to ``to`` and wait until Stripe is done (it reports
    ``advancing`` for a while, then ``ready``)."""
    clock = await w.v1.test_helpers.test_clocks.advance_async(
        clock_id, params={"frozen_time": to}, options=w.opts("advance", clock_id, str(to))
    )
    async with asyncio.timeout(CLOCK_WAIT):
        while clock.status != "ready":
            if clock.status == "internal_failure":
                raise RuntimeError(f"Stripe could not advance test clock {clock_id}")
            await asyncio.sleep(CLOCK_POLL)
            clock = await w.v1.test_helpers.test_clocks.retrieve_async(clock_id)


async def _story(
    w: _Writer, person: Person, customer: str, prices: dict[str, str]
) -> dict[str, Decimal]:
    """The customer's cards, subscriptions and invoices; the usage reported, per meter."""
    ext = person.external_id
    if ext == "demo-ada":
        # On a test clock started 12 days ago: seats and metered API calls since then.
        await _card(w, customer, "pm_card_visa", default=True)
        await _card(w, customer, "pm_card_mastercard", default=False)
        meter = await _meter(w)
        sub = await w.v1.subscriptions.create_async(
            params={
                "customer": customer,
                "items": [
                    {"price": prices[PER_SEAT.lookup_key], "quantity": 5},
                    {"price": await _metered_price(w, meter)},
                ],
            },
            options=w.opts("subscription", customer, "seats"),
        )
        now = int(time.time()) - 60
        await _advance_customer(w, customer, now)
        total = await _report_usage(w, customer, sub, now)
        # Usage moves without an event of its own: billing-sync refreshes it with the
        # subscription (and on reconciliation). Noting the report on the subscription,
        # as a usage reporter may, brings it into the mirror now.
        await w.v1.subscriptions.update_async(
            sub.id,
            params={"metadata": {"billfold_demo_usage_through": str(now)}},
            options=w.opts("usage-reported", sub.id),
        )
        return {meter: total}
    elif ext == "demo-grace":
        await _card(w, customer, "pm_card_amex", default=True)
        await _subscribe(w, customer, "tiered", prices[TIERED.lookup_key], quantity=12)
    elif ext == "demo-alan":
        await _card(w, customer, "pm_card_visa", default=True)
        await _subscribe(w, customer, "trial", prices[STARTER.lookup_key], trial_period_days=14)
    elif ext == "demo-katherine":
        await _card(w, customer, "pm_card_mastercard", default=True)
        sub = await _subscribe(w, customer, "leaving", prices[STARTER.lookup_key])
        await w.v1.subscriptions.update_async(
            sub.id,
            params={"cancel_at_period_end": True},
            options=w.opts("cancel-at-period-end", sub.id),
        )
    elif ext == "demo-yukihiro":
        await _card(w, customer, "pm_card_jcb", default=True)
        await _subscribe(w, customer, "jpy", prices[TOKYO.lookup_key])
    elif ext == "demo-edsger":
        invoiced = {"collection_method": "send_invoice", "days_until_due": 30}
        # An open invoice, due in 30 days.
        sub = await _subscribe(w, customer, "invoiced", prices[STARTER.lookup_key], **invoiced)
        await _finalized(w, sub)
        # A void invoice: its subscription was called off, the invoice voided.
        voided = await _subscribe(w, customer, "voided", prices[TIERED.lookup_key], **invoiced)
        inv = await _finalized(w, voided)
        if inv is not None:
            await w.v1.invoices.void_invoice_async(inv, options=w.opts("void", inv))
        await w.v1.subscriptions.cancel_async(voided.id, options=w.opts("cancel", voided.id))
        # An unpaid one: a card that attaches but declines every charge.
        await _card(w, customer, "pm_card_chargeCustomerFail", default=True)
        await _subscribe(
            w,
            customer,
            "declined",
            prices[PER_SEAT.lookup_key],
            quantity=2,
            payment_behavior="allow_incomplete",
        )
    elif ext == "demo-barbara":
        # Overdue, the Stripe way: the customer lives on a test clock 40 days back; its
        # first invoice is due 14 days after that; the clock is then advanced to now, so
        # that invoice is open, 26 days past due (and the renewal 30 days in is open too).
        invoiced = {"collection_method": "send_invoice", "days_until_due": 14}
        sub = await _subscribe(w, customer, "overdue", prices[STARTER.lookup_key], **invoiced)
        await _finalized(w, sub)
        await _advance_customer(w, customer, int(time.time()) - 60)
    return {}


async def _advance_customer(w: _Writer, customer: str, to: int) -> None:
    """Advance the customer's test clock (if it has one) to ``to``."""
    clock = (await w.v1.customers.retrieve_async(customer)).test_clock
    if clock is not None:
        await _advance(w, str(getattr(clock, "id", clock)), to)


async def _listing(w: _Writer, seeded: Seeded) -> None:
    subs = await w.v1.subscriptions.list_async(
        params={"customer": seeded.stripe_id, "status": "all", "limit": 100}
    )
    seeded.subscriptions = {s.id: s.status for s in subs.data}
    invs = await w.v1.invoices.list_async(params={"customer": seeded.stripe_id, "limit": 100})
    seeded.invoices = {str(i.id): i.status for i in invs.data}


async def seed(client: stripe.StripeClient, site_id: str) -> list[Seeded]:
    """Create (or find) the demo customers of ``site_id`` in its Stripe account."""
    w = _Writer(client, site_id)
    prices = {plan.lookup_key: await _price(w, plan) for plan in PLANS}
    out: list[Seeded] = []
    for person in PEOPLE:
        existing = await _existing(w, person)
        if existing is None:
            params: dict[str, Any] = {
                "email": person.email,
                "name": person.name,
                "metadata": {EXTERNAL_ID_KEY: person.external_id, SITE_METADATA_KEY: site_id},
            }
            if person.clock_days_back:
                params["test_clock"] = await _test_clock(w, person)
            customer = await w.v1.customers.create_async(
                params=params,  # type: ignore[arg-type]
                options=w.opts("customer", person.external_id),
            )
            usage = await _story(w, person, customer.id, prices)
        seeded = Seeded(person, existing or customer.id, created=existing is None)
        if existing is None:
            seeded.usage = usage
        await _listing(w, seeded)
        out.append(seeded)
    return out


async def mirrored(conn: Conn, site_id: str, seeded: list[Seeded]) -> list[str]:
    """What the mirror does not show yet (empty: everything is there, in Stripe's state)."""
    missing: list[str] = []
    for s in seeded:
        row = await conn.fetchrow(
            "SELECT id FROM mirror.customers WHERE site_id = $1 AND stripe_id = $2 "
            "AND deleted_at IS NULL",
            site_id,
            s.stripe_id,
        )
        if row is None:
            missing.append(s.stripe_id)
            continue
        subs = {
            r["stripe_id"]: r["status"]
            for r in await conn.fetch(
                "SELECT stripe_id, status FROM mirror.subscriptions WHERE customer_id = $1",
                row["id"],
            )
        }
        invs = {
            r["stripe_id"]: r["status"]
            for r in await conn.fetch(
                "SELECT stripe_id, status FROM mirror.invoices WHERE customer_id = $1",
                row["id"],
            )
        }
        missing += [k for k, v in s.subscriptions.items() if subs.get(k) != v]
        missing += [k for k, v in s.invoices.items() if invs.get(k) != v]
        used = {
            r["meter_id"]: r["value"]
            for r in await conn.fetch(
                "SELECT meter_id, sum(value) AS value FROM mirror.usage "
                "WHERE customer_id = $1 GROUP BY meter_id",
                row["id"],
            )
        }
        missing += [f"{USAGE_PENDING}{k}" for k, v in s.usage.items() if used.get(k) != v]
    return missing


#: How :func:`mirrored` names a meter whose usage the mirror does not show in full yet.
#: Stripe aggregates meter events asynchronously (the fake at once), so on Stripe the
#: usage may only reach the mirror at the next refresh: not a failed demo.
USAGE_PENDING = "usage of "


def usage_only(missing: list[str]) -> bool:
    return all(m.startswith(USAGE_PENDING) for m in missing)


async def wait_mirrored(
    conn: Conn, site_id: str, seeded: list[Seeded], seconds: float
) -> list[str]:
    """Poll :func:`mirrored` until it is empty or ``seconds`` passed; what is still missing."""
    missing = await mirrored(conn, site_id, seeded)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while missing:
                await asyncio.sleep(POLL_INTERVAL)
                missing = await mirrored(conn, site_id, seeded)
    return missing
