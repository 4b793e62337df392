"""Emails: each kind and locale as parsed MIME, exactly once per event, no secret leaked."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

EXPIRY = datetime(2026, 12, 24, 15, 30, tzinfo=UTC)

PORTAL = {
    "en": {
        "subject": "Manage your billing with {site}",
        "expiry": "December 24, 2026",
        "button": "Manage your billing",
        "greeting": "Hello Ada 0,",
    },
    "de": {
        "subject": "Ihre Abrechnung bei {site} verwalten",
        "expiry": "24. Dezember 2026",
        "button": "Abrechnung verwalten",
        "greeting": "Hallo Ada 0,",
    },
}


@pytest.mark.parametrize("locale", ["en", "de"])
async def test_portal_link_email_per_locale(
    locale: str,
    start_notifier: Any,
    publisher: Any,
    sink: Any,
    db_pool: asyncpg.Pool,
    keys: Any,
    h: Any,
) -> None:
    tenant = await h.make_tenant(db_pool, name="Acme & Co")
    await start_notifier()
    event, link = h.session_created(keys, tenant, locale=locale, expires_at=EXPIRY)
    await publisher.publish(event)
    person = tenant.people[0]
    await h.eventually(lambda: sink.to(person.email))
    [mail] = sink.to(person.email)
    want = PORTAL[locale]
    assert mail.message["To"] == person.email
    assert mail.subject == want["subject"].format(site="Acme & Co")
    assert mail.message["From"].addresses[0].addr_spec == "billing@notify.example"
    assert mail.message["From"].addresses[0].display_name == "Acme & Co"
    assert mail.message["Reply-To"] == "help@tenant.example"
    text, html = mail.part("plain"), mail.part("html")
    assert mail.link() == link
    assert link in text
    assert f'href="{link}"' in html
    for part in (text, html):
        assert want["expiry"] in part
        assert want["greeting"] in part
    assert want["button"] in html
    # HTML is autoescaped; the plain part is not.
    assert "Acme &amp; Co" in html
    assert "Acme & Co" in text
    assert f'lang="{locale}"' in html


async def test_locale_falls_back_to_the_site_then_english(
    start_notifier: Any, publisher: Any, sink: Any, db_pool: asyncpg.Pool, keys: Any, h: Any
) -> None:
    german_site = await h.make_tenant(db_pool, locale="de")
    english_site = await h.make_tenant(db_pool, locale="en")
    await start_notifier()
    # No session locale: the site's (de). An unsupported one (fr): English.
    first, _ = h.session_created(keys, german_site, locale=None, expires_at=EXPIRY)
    second, _ = h.session_created(keys, english_site, locale="fr", expires_at=EXPIRY)
    # A session locale of de-AT: German templates, Austrian date formats.
    english_site.people.append(
        h.Person(f"cu_{secrets.token_hex(12)}", "austria@example.com", "Ada 0")
    )
    await h.add_customer(db_pool, english_site.site_id, english_site.people[-1])
    third, _ = h.session_created(
        keys, english_site, customer=english_site.people[-1], locale="de-AT", expires_at=EXPIRY
    )
    for event in (first, second, third):
        await publisher.publish(event)
    await h.eventually(
        lambda: (
            sink.to(german_site.people[0].email)
            and sink.to(english_site.people[0].email)
            and sink.to("austria@example.com")
        )
    )
    assert sink.to(german_site.people[0].email)[0].subject.startswith("Ihre Abrechnung")
    assert sink.to(english_site.people[0].email)[0].subject.startswith("Manage your billing")
    austrian = sink.to("austria@example.com")[0]
    assert austrian.subject.startswith("Ihre Abrechnung")
    assert "24. Dezember 2026" in austrian.part("plain")


@pytest.mark.parametrize(
    ("locale", "subject", "expiry"),
    [
        ("en", "Your sign-in code for {site}", "December 24, 2026"),
        ("de", "Ihr Anmeldecode für {site}", "24. Dezember 2026"),
    ],
)
async def test_login_code_email_per_locale(
    locale: str,
    subject: str,
    expiry: str,
    start_notifier: Any,
    publisher: Any,
    sink: Any,
    db_pool: asyncpg.Pool,
    keys: Any,
    h: Any,
) -> None:
    tenant = await h.make_tenant(db_pool)
    await start_notifier()
    event, code = h.code_requested(keys, tenant, "someone@example.org", locale=locale)
    await publisher.publish(event)
    await h.eventually(lambda: sink.to("someone@example.org"))
    [mail] = sink.to("someone@example.org")
    assert mail.message["To"] == "someone@example.org"
    assert mail.subject == subject.format(site=tenant.name)
    assert code not in mail.subject
    for part in (mail.part("plain"), mail.part("html")):
        assert code in part
        assert expiry in part


async def test_no_link_or_code_in_logs_rows_or_messages(
    start_notifier: Any,
    publisher: Any,
    sink: Any,
    db_pool: asyncpg.Pool,
    keys: Any,
    h: Any,
    logs: Any,
) -> None:
    tenant = await h.make_tenant(db_pool)
    await start_notifier()
    session_event, link = h.session_created(keys, tenant)
    code_event, code = h.code_requested(keys, tenant, "coder@example.org", code="482913")
    token = link.rsplit("/", 1)[1]
    wire = session_event.model_dump_json() + code_event.model_dump_json()
    assert token not in wire
    assert code not in wire
    await publisher.publish(session_event)
    await publisher.publish(code_event)
    await h.eventually(lambda: sink.to(tenant.people[0].email) and sink.to("coder@example.org"))
    await h.eventually(
        lambda: "delivery_sent" in logs.events() and logs.text().count("delivery_sent") >= 2
    )
    rows = await db_pool.fetch(
        "SELECT payload::text AS p FROM notify.deliveries WHERE site_id = $1", tenant.site_id
    )
    assert len(rows) == 2
    stored = " ".join(r["p"] for r in rows)
    assert token not in stored
    assert code not in stored
    assert token not in logs.text()
    assert code not in logs.text()
    # ... and yet the emails carry them.
    assert token in sink.to(tenant.people[0].email)[0].part("plain")
    assert code in sink.to("coder@example.org")[0].part("plain")


async def test_redelivered_event_sends_once(
    start_notifier: Any,
    publisher: Any,
    sink: Any,
    db_pool: asyncpg.Pool,
    keys: Any,
    h: Any,
    logs: Any,
) -> None:
    tenant = await h.make_tenant(db_pool)
    await start_notifier()
    event, _ = h.session_created(keys, tenant)
    await publisher.publish(event)
    await publisher.publish(event)  # the broker redelivers, a relay republishes: same id
    await h.eventually(lambda: "message_duplicate_skipped" in logs.events())
    await h.eventually(lambda: sink.to(tenant.people[0].email))

    async def sent() -> bool:
        rows = await h.delivery_rows(db_pool, event.id)
        return [r["status"] for r in rows] == ["sent"]

    await h.eventually(sent)
    assert len(sink.to(tenant.people[0].email)) == 1


async def test_smtp_down_then_up_delivers_each_email_once(
    start_notifier: Any, publisher: Any, sink: Any, db_pool: asyncpg.Pool, keys: Any, h: Any
) -> None:
    tenant = await h.make_tenant(db_pool, n_customers=3)
    await start_notifier()
    await sink.stop()
    events = [h.session_created(keys, tenant, customer=p)[0] for p in tenant.people]
    for event in events:
        await publisher.publish(event)

    async def all_retried() -> bool:
        for event in events:
            rows = await h.delivery_rows(db_pool, event.id)
            if not rows or rows[0]["attempts"] < 2 or rows[0]["status"] != "pending":
                return False
        return True

    await h.eventually(all_retried)
    row = (await h.delivery_rows(db_pool, events[0].id))[0]
    assert "smtp unavailable" in row["last_error"]
    await sink.start()  # same port: SMTP is back
    await h.eventually(lambda: all(sink.to(p.email) for p in tenant.people))

    async def all_sent() -> bool:
        for event in events:
            rows = await h.delivery_rows(db_pool, event.id)
            if [r["status"] for r in rows] != ["sent"]:
                return False
        return True

    await h.eventually(all_sent)
    for person in tenant.people:
        assert len(sink.to(person.email)) == 1


async def test_transient_4xx_is_retried(
    start_notifier: Any, publisher: Any, sink: Any, db_pool: asyncpg.Pool, keys: Any, h: Any
) -> None:
    tenant = await h.make_tenant(db_pool)
    await start_notifier()
    sink.fail_next("451 4.3.0 try again later", times=2, to=tenant.people[0].email)
    event, _ = h.session_created(keys, tenant)
    await publisher.publish(event)
    await h.eventually(lambda: sink.to(tenant.people[0].email))

    async def sent() -> bool:
        rows = await h.delivery_rows(db_pool, event.id)
        return rows[0]["status"] == "sent"

    await h.eventually(sent)
    row = (await h.delivery_rows(db_pool, event.id))[0]
    assert row["attempts"] == 3
    assert len(sink.to(tenant.people[0].email)) == 1
