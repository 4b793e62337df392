"""Dead letters: permanent SMTP failures, exhausted retries and poison messages are
parked with their reason, listed by `billfold dlq list` and sent again by `dlq replay`."""

from __future__ import annotations

from typing import Any

import asyncpg


def _line_of(output: str, ident: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(ident + "\t")]
    assert len(lines) == 1, output
    return lines[0]


async def _status(h: Any, pool: asyncpg.Pool, event_id: str) -> str | None:
    rows = await h.delivery_rows(pool, event_id)
    return rows[0]["status"] if rows else None


async def test_permanent_smtp_failure_is_dead_lettered_listed_and_replayed(
    start_notifier: Any, publisher: Any, sink: Any, db_pool: asyncpg.Pool, keys: Any, h: Any
) -> None:
    tenant = await h.make_tenant(db_pool)
    await start_notifier()
    sink.fail_next("550 5.1.1 mailbox unavailable", to=tenant.people[0].email)
    event, link = h.session_created(keys, tenant)
    await publisher.publish(event)

    async def dead() -> bool:
        return await _status(h, db_pool, event.id) == "dead"

    await h.eventually(dead)
    [row] = await h.delivery_rows(db_pool, event.id)
    assert row["attempts"] == 1  # a 5xx is not retried
    assert sink.to(tenant.people[0].email) == []

    listed = h.billfold_cli(keys, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    line = _line_of(listed.stdout, row["id"])
    assert "delivery" in line
    assert "portal_session.created" in line
    assert "550" in line
    assert link.rsplit("/", 1)[1] not in listed.stdout + listed.stderr

    replayed = h.billfold_cli(keys, "dlq", "replay", row["id"])
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed {row['id']}" in replayed.stdout
    await h.eventually(lambda: sink.to(tenant.people[0].email))

    async def sent() -> bool:
        return await _status(h, db_pool, event.id) == "sent"

    await h.eventually(sent)
    [mail] = sink.to(tenant.people[0].email)
    assert mail.link() == link
    after = h.billfold_cli(keys, "dlq", "list")
    assert row["id"] not in after.stdout


async def test_exhausted_retries_are_dead_lettered_then_replayed_once_fixed(
    start_notifier: Any, publisher: Any, sink: Any, db_pool: asyncpg.Pool, keys: Any, h: Any
) -> None:
    tenant = await h.make_tenant(db_pool)
    await start_notifier(email_retry_delays=(0.02, 0.02))
    ghost = h.Person("cu_" + "9" * 24, "late@example.com", "Late Mirror")
    event, _ = h.session_created(keys, tenant, customer=ghost)
    await publisher.publish(event)

    async def dead() -> bool:
        return await _status(h, db_pool, event.id) == "dead"

    await h.eventually(dead)
    [row] = await h.delivery_rows(db_pool, event.id)
    assert row["attempts"] == 3  # the first try and both retries
    assert "not mirrored" in row["last_error"]
    listed = h.billfold_cli(keys, "dlq", "list")
    assert "not mirrored" in _line_of(listed.stdout, row["id"])

    await h.add_customer(db_pool, tenant.site_id, ghost)  # billing-sync caught up
    assert h.billfold_cli(keys, "dlq", "replay", row["id"]).returncode == 0
    await h.eventually(lambda: sink.to("late@example.com"))

    async def sent() -> bool:
        return await _status(h, db_pool, event.id) == "sent"

    await h.eventually(sent)
    assert len(sink.to("late@example.com")) == 1


async def test_poison_message_is_parked_listed_and_replayed(
    start_notifier: Any, publisher: Any, db_pool: asyncpg.Pool, keys: Any, h: Any, logs: Any
) -> None:
    await start_notifier()
    await publisher.publish_raw(
        "portal_session.created", b'{"not": "an event"}', message_id="poison-1", headers={}
    )
    await h.eventually(lambda: logs.events().count("message_unparseable") == 1)

    def listed_poison() -> bool:
        out = h.billfold_cli(keys, "dlq", "list").stdout
        return "poison-1\tqueue" in out

    await h.eventually(listed_poison)
    listed = h.billfold_cli(keys, "dlq", "list").stdout
    assert "broker dead-lettered (rejected)" in _line_of(listed, "poison-1")

    replayed = h.billfold_cli(keys, "dlq", "replay", "poison-1")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed poison-1" in replayed.stdout
    # Back on the consumer queue: the consumer reads it again (and parks it again).
    await h.eventually(lambda: logs.events().count("message_unparseable") == 2)
    await h.eventually(listed_poison)


async def test_replay_needs_ids_or_all_and_refuses_unknown_ids(keys: Any, h: Any) -> None:
    none = h.billfold_cli(keys, "dlq", "replay")
    assert none.returncode != 0
    assert "ids or --all" in none.stderr
    unknown = h.billfold_cli(keys, "dlq", "replay", "dlv_nope")
    assert unknown.returncode != 0
    assert "no such dead letter: dlv_nope" in unknown.stderr
