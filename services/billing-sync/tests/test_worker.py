"""The worker: coalescing, one event per real change, retries with backoff, customer
groups processed concurrently, and webhook acceptance first."""

from __future__ import annotations

import asyncio
import os

import pytest

from billfold_testing.tcp_proxy import TcpProxy
from billing_sync import accounts, inbox
from billing_sync.priority import AcceptanceFirst
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings
from billing_sync.stripe_api import StripeGateway
from billing_sync.worker import FETCHES, Worker

from .conftest import Eventually, Synced, new_site

MANUAL = [{"worker": False}]  # webhooks accepted; the test runs the worker by hand


def _fetches(kind: str) -> float:
    return float(FETCHES.labels(kind)._value.get())


async def _accepted(synced: Synced) -> list[str]:
    """This test's accepted, unprocessed events. A worker claims every site's due events,
    so events earlier tests left pending (their app stopped first) are parked, or the
    test's own worker would count them too."""
    await asyncio.to_thread(synced.fake.drain)
    await synced.pool.execute(
        "UPDATE mirror.stripe_events SET next_attempt_at = 'infinity' "
        "WHERE site_id <> $1 AND processed_at IS NULL",
        synced.site_id,
    )
    rows = await synced.pool.fetch(
        "SELECT id FROM mirror.stripe_events WHERE site_id = $1 AND processed_at IS NULL",
        synced.site_id,
    )
    return [r["id"] for r in rows]


@pytest.mark.parametrize("synced", MANUAL, indirect=True)
async def test_many_events_for_one_customer_share_one_fetch(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox
) -> None:
    customer = await synced.api.v1.customers.create_async(params={"email": "c@example.com"})
    for n in range(8):
        await synced.api.v1.customers.update_async(customer.id, params={"name": f"Name {n}"})
    assert len(await _accepted(synced)) == 9
    gateway = StripeGateway(settings)
    try:
        before = _fetches("customer")
        assert await Worker(settings, synced.pool, gateway, box).run_once() == 9
        assert _fetches("customer") - before == 1
    finally:
        await gateway.close()
    assert await _accepted(synced) == []
    assert (
        await synced.pool.fetchval(
            "SELECT name FROM mirror.customers WHERE stripe_id = $1", customer.id
        )
        == "Name 7"
    )
    # Nine events, one change (nothing -> the current customer): one event out.
    assert [e["type"] for e in await synced.outbox()] == ["customer.updated"]


@pytest.mark.parametrize("synced", MANUAL, indirect=True)
async def test_a_failing_refresh_is_retried_with_backoff_and_the_error_redacted(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox
) -> None:
    await synced.api.v1.customers.create_async(params={"email": "f@example.com"})
    [event] = await _accepted(synced)
    bad_key = "sk_live_" + "W" * 30  # the fake (test mode) refuses live keys: 401
    async with synced.pool.acquire() as conn:
        await accounts.configure(conn, box, synced.site_id, api_key=bad_key)
    gateway = StripeGateway(settings.model_copy(update={"stripe_max_network_retries": 0}))
    worker = Worker(settings, synced.pool, gateway, box)
    try:
        assert await worker.run_once() == 1
        row = await synced.pool.fetchrow(
            "SELECT attempts, last_error, processed_at, failed_at, "
            "next_attempt_at > now() AS later FROM mirror.stripe_events WHERE id = $1",
            event,
        )
        assert row["attempts"] == 1
        assert row["later"] is True  # backed off, not retried at once
        assert row["processed_at"] is None
        assert row["failed_at"] is None
        assert row["last_error"].startswith("AuthenticationError")
        assert "W" * 10 not in row["last_error"]
        assert await worker.run_once() == 0  # not due yet
        # Fixed configuration; the retry (made due now) succeeds.
        async with synced.pool.acquire() as conn:
            await accounts.configure(conn, box, synced.site_id, api_key=synced.api_key)
        await synced.pool.execute(
            "UPDATE mirror.stripe_events SET next_attempt_at = now() WHERE id = $1", event
        )
        assert await worker.run_once() == 1
        assert await synced.pool.fetchval(
            "SELECT processed_at IS NOT NULL FROM mirror.stripe_events WHERE id = $1", event
        )
    finally:
        await gateway.close()


@pytest.mark.parametrize("synced", MANUAL, indirect=True)
async def test_events_are_given_up_after_max_attempts(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox
) -> None:
    await synced.api.v1.customers.create_async(params={"email": "g@example.com"})
    [event] = await _accepted(synced)
    async with synced.pool.acquire() as conn:
        await accounts.configure(conn, box, synced.site_id, api_key="sk_live_" + "V" * 30)
    gateway = StripeGateway(settings.model_copy(update={"stripe_max_network_retries": 0}))
    worker = Worker(
        settings.model_copy(update={"worker_max_attempts": 2}), synced.pool, gateway, box
    )
    try:
        for _ in range(2):
            await synced.pool.execute(
                "UPDATE mirror.stripe_events SET next_attempt_at = now() WHERE id = $1", event
            )
            assert await worker.run_once() == 1
        await synced.pool.execute(
            "UPDATE mirror.stripe_events SET next_attempt_at = now() WHERE id = $1", event
        )
        assert await worker.run_once() == 0  # given up: left for reconciliation
    finally:
        await gateway.close()
    row = await synced.pool.fetchrow(
        "SELECT attempts, failed_at FROM mirror.stripe_events WHERE id = $1", event
    )
    assert row["attempts"] == 2
    assert row["failed_at"] is not None


@pytest.mark.parametrize("synced", MANUAL, indirect=True)
async def test_customer_groups_are_processed_concurrently(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox, eventually: Eventually
) -> None:
    # Stripe hangs (a proxy holding every byte): each customer group waits in its fetch.
    # Groups processed one after the other would keep one group's read (the customer, its
    # tax ids included) open at a time; concurrent groups open theirs side by side.
    made = [
        await synced.api.v1.customers.create_async(params={"email": f"p{n}@example.com"})
        for n in range(4)
    ]
    assert len(await _accepted(synced)) == 4
    proxy = TcpProxy("127.0.0.1", int(synced.fake.base_url.rsplit(":", 1)[1]))
    await proxy.start()
    gateway = StripeGateway(
        settings.model_copy(update={"stripe_api_base": f"http://127.0.0.1:{proxy.port}"})
    )
    try:
        proxy.pause()
        worker = Worker(settings, synced.pool, gateway, box, concurrency=4)
        running = asyncio.create_task(worker.run_once())
        await eventually(lambda: proxy.live_connections >= 4, timeout=20)
        proxy.resume()
        assert await running == 4
    finally:
        await proxy.stop()
        await gateway.close()
    assert await _accepted(synced) == []
    rows = await synced.pool.fetchval(
        "SELECT count(*) FROM mirror.customers WHERE stripe_id = ANY($1::text[])",
        [c.id for c in made],
    )
    assert rows == 4


@pytest.mark.parametrize("synced", MANUAL, indirect=True)
async def test_processing_waits_while_webhooks_are_being_answered(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox
) -> None:
    customer = await synced.api.v1.customers.create_async(params={"email": "w@example.com"})
    assert len(await _accepted(synced)) == 1
    acceptance = AcceptanceFirst(limit=1)
    gateway = StripeGateway(settings)
    settings = settings.model_copy(update={"worker_min_concurrency": 0})
    try:
        worker = Worker(settings, synced.pool, gateway, box, acceptance=acceptance)
        with acceptance.accepting(), acceptance.accepting():  # two in flight: over the limit
            running = asyncio.create_task(worker.run_once())
            # Bounded wait for something that must NOT happen: one local customer is
            # mirrored in well under a second when nothing holds the worker back.
            done, _ = await asyncio.wait({running}, timeout=1.5)
            assert not done
            assert len(await _accepted(synced)) == 1
        assert await asyncio.wait_for(running, 30) == 1  # acceptance caught up: it runs
    finally:
        await gateway.close()
    assert await synced.pool.fetchval(
        "SELECT count(*) FROM mirror.customers WHERE stripe_id = $1", customer.id
    )


@pytest.mark.parametrize("synced", MANUAL, indirect=True)
async def test_busy_acceptance_slows_processing_to_its_minimum_but_never_stops_it(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox
) -> None:
    made = [
        await synced.api.v1.customers.create_async(params={"email": f"m{n}@example.com"})
        for n in range(3)
    ]
    assert len(await _accepted(synced)) == 3
    acceptance = AcceptanceFirst(limit=1)
    gateway = StripeGateway(settings)
    settings = settings.model_copy(update={"worker_min_concurrency": 1})
    worker = Worker(settings, synced.pool, gateway, box, acceptance=acceptance)
    active, most = 0, 0
    group = worker._group

    async def counted(site: str, key: str, events: list[inbox.Pending]) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        try:
            await group(site, key, events)
        finally:
            active -= 1

    worker._group = counted  # type: ignore[method-assign]
    try:
        with acceptance.accepting(), acceptance.accepting():  # busy all along
            assert await asyncio.wait_for(worker.run_once(), 30) == 3
    finally:
        await gateway.close()
    assert most == 1  # one group at a time, not the default concurrency
    assert await _accepted(synced) == []
    assert (
        await synced.pool.fetchval(
            "SELECT count(*) FROM mirror.customers WHERE stripe_id = ANY($1::text[])",
            [c.id for c in made],
        )
        == 3
    )


async def test_acceptance_stays_first_for_the_hold_after_a_busy_spell() -> None:
    # A burst's deliveries reach the handler in waves; between two waves the count dips
    # under the limit. The hold keeps processing off through such dips: busy right after
    # the spell, clear only once the hold has passed (and at once without a hold).
    loop = asyncio.get_running_loop()
    held = AcceptanceFirst(limit=1, hold=0.3)
    with held.accepting(), held.accepting():
        assert held.busy
    assert held.in_flight == 0
    assert held.busy  # the spell is over, the hold is not
    started = loop.time()
    await asyncio.wait_for(held.wait_clear(), 5)
    assert loop.time() - started >= 0.29
    assert not held.busy

    unheld = AcceptanceFirst(limit=1)
    with unheld.accepting(), unheld.accepting():
        assert unheld.busy
    assert not unheld.busy
    started = loop.time()
    await asyncio.wait_for(unheld.wait_clear(), 5)
    assert loop.time() - started < 0.1

    # One delivery in flight is not over the limit: no spell, no hold.
    with held.accepting():
        assert not held.busy


@pytest.mark.parametrize("synced", MANUAL, indirect=True)
async def test_a_site_whose_secrets_do_not_decrypt_fails_alone_with_backoff(
    synced: Synced, settings: BillingSyncSettings, box: SecretBox
) -> None:
    # Another site's API key sealed under another BILLFOLD_BILLING_SECRETS_KEY (a row
    # restored from elsewhere, a rotated key): its events fail, recorded with backoff;
    # this site's events are processed all the same, and the bad ones are not retaken at
    # once, round after round (which starved every other group).
    customer = await synced.api.v1.customers.create_async(params={"email": "ok@example.com"})
    assert len(await _accepted(synced)) == 1
    other = await new_site(synced.pool)
    async with synced.pool.acquire() as conn:
        await accounts.configure(conn, SecretBox(os.urandom(32)), other, api_key="sk_test_x")
        await inbox.record(
            conn,
            other,
            {
                "id": "evt_undecryptable",
                "type": "customer.updated",
                "created": 1_700_000_000,
                "data": {"object": {"id": "cus_elsewhere", "object": "customer"}},
            },
            "{}",
        )
    gateway = StripeGateway(settings)
    try:
        await asyncio.wait_for(Worker(settings, synced.pool, gateway, box).run_once(), 30)
    finally:
        await gateway.close()
    assert await _accepted(synced) == []
    assert await synced.pool.fetchval(
        "SELECT count(*) FROM mirror.customers WHERE stripe_id = $1", customer.id
    )
    bad = await synced.pool.fetchrow(
        "SELECT attempts, last_error, next_attempt_at > now() AS later "
        "FROM mirror.stripe_events WHERE id = 'evt_undecryptable'"
    )
    assert bad is not None
    assert bad["attempts"] == 1
    assert "does not decrypt" in bad["last_error"]
    assert bad["later"]
