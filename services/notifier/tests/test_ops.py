"""Operating the notifier: health, metrics, start-up checks, settings, the sender CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest

from notifier.email.smtp import SmtpConfig
from notifier.settings import NotifierSettings


async def test_health_and_metrics(
    start_notifier: Any, publisher: Any, sink: Any, db_pool: asyncpg.Pool, keys: Any, h: Any
) -> None:
    client = await start_notifier()
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    body = await ready.json()
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["rabbitmq"] == "ok"
    tenant = await h.make_tenant(db_pool)
    event, _ = h.session_created(keys, tenant)
    await publisher.publish(event)
    await h.eventually(lambda: sink.to(tenant.people[0].email))

    async def counted() -> bool:
        text = await (await client.get("/metrics")).text()
        return 'notifier_deliveries_total{channel="email",outcome="sent"}' in text

    await h.eventually(counted)
    text = await (await client.get("/metrics")).text()
    assert "notifier_event_to_sent_seconds_bucket" in text


def test_refuses_to_start_without_its_keys() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BILLFOLD_NOTIFIER_PRIVATE_KEY", "BILLFOLD_NOTIFIER_DATA_KEY")
    }
    proc = subprocess.run(
        [sys.executable, "-m", "notifier"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "BILLFOLD_NOTIFIER_PRIVATE_KEY and BILLFOLD_NOTIFIER_DATA_KEY must be set" in proc.stderr


@pytest.mark.parametrize(
    ("url", "starttls", "expected"),
    [
        ("smtp://mail.example:25", False, ("mail.example", 25, False, False, None, None)),
        ("smtp://mail.example:587", True, ("mail.example", 587, False, True, None, None)),
        (
            "smtps://us%40er:p%3Ass@mail.example",
            False,
            ("mail.example", 465, True, False, "us@er", "p:ss"),
        ),
    ],
)
def test_smtp_url_forms(url: str, starttls: bool, expected: tuple[Any, ...]) -> None:
    settings = NotifierSettings(smtp_url=url, smtp_starttls=starttls)
    c = SmtpConfig.from_settings(settings)
    assert (c.host, c.port, c.use_tls, c.start_tls, c.username, c.password) == expected
    assert "p:ss" not in repr(c)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("smtp_url", "http://mail.example"),
        ("notifier_private_key", "short"),
        ("notifier_data_key", "c2hvcnQ="),
        ("email_retry_delays", (-1.0,)),
    ],
)
def test_bad_settings_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        NotifierSettings(**{field: value})


async def test_sender_per_site(
    start_notifier: Any, publisher: Any, sink: Any, db_pool: asyncpg.Pool, keys: Any, h: Any
) -> None:
    tenant = await h.make_tenant(db_pool)
    result = h.billfold_cli(
        keys,
        "notifier",
        "sender",
        "--site",
        tenant.slug,
        "--address",
        "billing@acme.example",
        "--name",
        "Acme Billing",
    )
    assert result.returncode == 0, result.stderr
    bad = h.billfold_cli(keys, "notifier", "sender", "--site", "no-such-site", "--address", "a@b.c")
    assert bad.returncode != 0
    assert "no such site: no-such-site" in bad.stderr
    await start_notifier()
    event, _ = h.session_created(keys, tenant)
    await publisher.publish(event)
    await h.eventually(lambda: sink.to(tenant.people[0].email))
    [mail] = sink.to(tenant.people[0].email)
    sender = mail.message["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == ("Acme Billing", "billing@acme.example")
    assert mail.envelope_from == "billing@acme.example"


async def test_retention_sweep_deletes_old_sent_deliveries_only(
    db_pool: asyncpg.Pool, keys: Any, h: Any
) -> None:
    from notifier import deliveries

    tenant = await h.make_tenant(db_pool)
    ids = {}
    for status, age in (("sent", 40), ("sent", 1), ("dead", 40), ("pending", 40)):
        event, _ = h.session_created(keys, tenant)
        async with db_pool.acquire() as conn:
            await deliveries.add_email(conn, event)
        await db_pool.execute(
            "UPDATE notify.deliveries SET status = $2, "
            "sent_at = CASE WHEN $2 = 'sent' THEN now() - make_interval(days => $3) END "
            "WHERE event_id = $1",
            event.id,
            status,
            age,
        )
        ids[(status, age)] = event.id
    await deliveries.sweep(db_pool, older_than_days=30)
    left = {key for key, event_id in ids.items() if await h.delivery_rows(db_pool, event_id)}
    assert left == {("sent", 1), ("dead", 40), ("pending", 40)}
    # Leave nothing pending for a later test's dispatcher.
    await db_pool.execute("DELETE FROM notify.deliveries WHERE site_id = $1", tenant.site_id)
