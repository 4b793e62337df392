"""The Usage section with the demo's data: `billfold stripe demo` (billing-sync's
``demo.seed``) makes its customers in the fake Stripe, billing-sync mirrors them through
its webhooks, and the customer `make run` opens the portal for (Ada, 12 days into a
period with metered API calls) sees the period's total and a bar for each day."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from babel.numbers import format_decimal

from billfold.settings import Settings
from billfold_testing.waiting import Eventually

from .billing import Billing, portal_for
from .conftest import Client, create_link, enter, texts

_BAR = re.compile(
    r'<rect class="bar" x="(\d+)" y="([\d.]+)" width="(\d+)" height="([\d.]+)">'
    r"<title>([^<]*)</title></rect>"
)


async def test_the_demo_customer_sees_a_bar_for_each_day_of_usage(
    aiohttp_client: Callable[..., Any],
    bf_settings: Settings,
    billing: Billing,
    api: Client,
    db_pool: asyncpg.Pool,
    eventually: Eventually,
) -> None:
    from billing_sync import demo

    site = billing.tenant.site_id
    seeded = await demo.seed(billing.api, site)
    ada = seeded[0]
    assert ada.person.external_id == "demo-ada"  # the customer `make run` opens
    [(meter_id, reported)] = ada.usage.items()
    await billing.settled(eventually)

    async def usage_mirrored() -> bool:
        value = await db_pool.fetchval(
            "SELECT value FROM mirror.usage WHERE site_id = $1 AND meter_id = $2",
            site,
            meter_id,
        )
        return value == reported

    await eventually(usage_mirrored, timeout=30)
    customer = await db_pool.fetchval(
        "SELECT id FROM mirror.customers WHERE site_id = $1 AND stripe_id = $2",
        site,
        ada.stripe_id,
    )
    billing.tenant.customer_ids = [str(customer)]
    portal = await portal_for(aiohttp_client, bf_settings, billing)
    await enter(portal, await create_link(api, billing.tenant, locale="en"))

    resp = await portal.get("/p/usage")
    assert resp.status == 200
    html = await resp.text()
    shown = texts(html)
    assert "No usage this period." not in shown
    assert "API calls" in shown
    assert format_decimal(reported, locale="en") in shown  # the period's total, 12,345
    assert "API calls per day" in shown

    bars = [(int(x), float(y), float(h), label) for x, y, _w, h, label in _BAR.findall(html)]
    # A bar per UTC day since the period began 12 days ago (13 or 14 days touched).
    assert 13 <= len(bars) <= 14, bars
    assert [x for x, *_ in bars] == sorted({x for x, *_ in bars})  # side by side, in order
    used = [b for b in bars if b[2] > 0]
    assert len(used) >= 12  # calls every day (fewer at weekends, never none)
    # The busiest day reaches the top of the chart; every bar stands on its floor.
    assert max(h for _, _, h, _ in bars) == 100
    assert all(abs(y + h - 100) < 0.02 for _, y, h, _ in bars)
    # Each bar says its day and number; together they make the period's total.
    per_day = [Decimal(label.split(": ")[1].replace(",", "")) for *_, label in bars]
    assert sum(per_day) == reported
    today = datetime.now(UTC).strftime("%b %-d")
    assert bars[-1][3].startswith(today + ":")
    assert re.search(r'<svg [^>]*role="img" aria-label="API calls per day, [^"]+highest', html)
