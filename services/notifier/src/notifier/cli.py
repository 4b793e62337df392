"""The notifier's ``billfold`` commands: ``notifier`` (keygen, sender), ``dlq``, ``webhook``."""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aio_pika
import asyncpg
import click

from billfold.cli import run_database_command
from billfold.events import EVENT_TYPES
from billfold.sealing import generate_keypair
from notifier import directory, dlq
from notifier.consumer import NOT_FOR_WEBHOOKS
from notifier.settings import NotifierSettings, load_notifier_settings
from notifier.webhooks import endpoints, guard

T = TypeVar("T")
WEBHOOK_EVENTS = [t for t in EVENT_TYPES if t not in NOT_FOR_WEBHOOKS]


def _run(work: Callable[[NotifierSettings, asyncpg.Connection], Awaitable[T]]) -> T:
    settings = load_notifier_settings()

    async def go() -> T:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await work(settings, conn)
        finally:
            await conn.close()

    return run_database_command(go(), schema="notify")


async def _site_id(conn: asyncpg.Connection, ref: str) -> str:
    site = await directory.find_site(conn, ref)
    if site is None:
        raise click.ClickException(f"no such site: {ref}")
    return site.id


def _when(value: Any) -> str:
    return value.isoformat(timespec="seconds") if value is not None else "-"


# --- billfold notifier ----------------------------------------------------------------


@click.group("notifier")
def notifier_group() -> None:
    """The notifier's keys and per-site senders."""


@notifier_group.command()
def keygen() -> None:
    """Print a new sealing key pair and data key, as environment lines.

    Producers (session-api, portal-web) get BILLFOLD_NOTIFIER_PUBLIC_KEY; only the
    notifier gets the private key and the data key (which encrypts webhook secrets).
    """
    pair = generate_keypair()
    data_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    click.echo(f"BILLFOLD_NOTIFIER_PUBLIC_KEY={pair.public}")
    click.echo(f"BILLFOLD_NOTIFIER_PRIVATE_KEY={pair.private}")
    click.echo(f"BILLFOLD_NOTIFIER_DATA_KEY={data_key}")


@notifier_group.command("sender")
@click.option("--site", required=True, help="Site slug or id.")
@click.option("--address", required=True, help="From address, e.g. billing@acme.example.")
@click.option("--name", default=None, help="Display name (default: the site's name).")
def sender(site: str, address: str, name: str | None) -> None:
    """Set the sender of a site's emails."""
    if "@" not in address:
        raise click.BadParameter("must be an email address", param_hint="--address")

    async def work(_: NotifierSettings, conn: asyncpg.Connection) -> None:
        await directory.set_sender(conn, await _site_id(conn, site), address, name)

    _run(work)
    click.echo(f"sender of {site}: {address}")


# --- billfold dlq -------------------------------------------------------------------------


@click.group("dlq")
def dlq_group() -> None:
    """Dead letters: deliveries that failed for good, and messages the broker parked."""


async def _with_amqp(
    settings: NotifierSettings, work: Callable[[aio_pika.abc.AbstractConnection], Awaitable[T]]
) -> T:
    connection = await aio_pika.connect(settings.amqp_url, timeout=10)
    try:
        # The consumer may never have run here: the queue exists only once declared.
        channel = await connection.channel()
        await channel.declare_queue(dlq.DLQ, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.close()
        return await work(connection)
    finally:
        await connection.close()


@dlq_group.command("list")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10000))
def dlq_list(limit: int) -> None:
    """One line per dead letter: id, source, type, site, attempts, when, reason."""

    async def work(settings: NotifierSettings, conn: asyncpg.Connection) -> list[dlq.DeadLetter]:
        return await _with_amqp(settings, lambda amqp: dlq.list_all(conn, amqp, limit))

    letters = _run(work)
    for d in letters:
        click.echo(
            "\t".join(
                [
                    d.id,
                    d.source,
                    d.event_type or "-",
                    d.site_id or "-",
                    str(d.attempts if d.attempts is not None else "-"),
                    _when(d.at),
                    d.reason,
                ]
            )
        )
    click.echo(f"{len(letters)} dead letter(s)", err=True)


@dlq_group.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
def dlq_replay(ids: tuple[str, ...], replay_all: bool) -> None:
    """Send dead letters again (a fresh retry schedule for deliveries)."""
    if bool(ids) == replay_all:
        raise click.UsageError("give dead letter ids or --all (not both)")

    async def work(settings: NotifierSettings, conn: asyncpg.Connection) -> list[str]:
        wanted = None if replay_all else list(ids)
        return await _with_amqp(settings, lambda amqp: dlq.replay(conn, amqp, wanted))

    replayed = _run(work)
    for ident in replayed:
        click.echo(f"replayed {ident}")
    missing = sorted(set(ids) - set(replayed))
    if missing:
        raise click.ClickException(f"no such dead letter: {', '.join(missing)}")
    click.echo(f"{len(replayed)} replayed", err=True)


# --- billfold webhook ------------------------------------------------------------------


@click.group("webhook")
def webhook_group() -> None:
    """Tenant webhook endpoints."""


@webhook_group.command("add")
@click.option("--site", required=True, help="Site slug or id.")
@click.option("--url", required=True, help="https:// URL that receives the events.")
@click.option(
    "--event",
    "events",
    multiple=True,
    type=click.Choice(WEBHOOK_EVENTS),
    help="Event type to send (repeat; default: all).",
)
def webhook_add(site: str, url: str, events: tuple[str, ...]) -> None:
    """Register an endpoint; prints its signing secret once, on the last line."""

    async def work(settings: NotifierSettings, conn: asyncpg.Connection) -> tuple[Any, str]:
        try:
            await guard.check_url(url, allow_private=settings.webhook_allow_private)
        except guard.UnsafeUrl as exc:
            raise click.BadParameter(str(exc), param_hint="--url") from None
        site_id = await _site_id(conn, site)
        return await endpoints.add(conn, settings.data_key_bytes(), site_id, url, list(events))

    endpoint, secret = _run(work)
    click.echo(f"endpoint {endpoint.id} for {url}")
    click.echo(f"events: {', '.join(endpoint.event_types) or 'all'}")
    click.echo("signing secret (shown once; verify Billfold-Signature with it):")
    click.echo(secret)


@webhook_group.command("list")
@click.option("--site", default=None, help="Site slug or id (default: every site).")
def webhook_list(site: str | None) -> None:
    """id, site, url, events, created."""

    async def work(_: NotifierSettings, conn: asyncpg.Connection) -> list[endpoints.Endpoint]:
        site_id = None if site is None else await _site_id(conn, site)
        return await endpoints.listing(conn, site_id)

    for e in _run(work):
        events = ",".join(e.event_types) or "all"
        click.echo(f"{e.id}\t{e.site_id}\t{e.url}\t{events}\t{_when(e.created_at)}")


@webhook_group.command("remove")
@click.argument("endpoint_id")
def webhook_remove(endpoint_id: str) -> None:
    """Stop sending to an endpoint (its pending deliveries become dead letters with the
    reason "endpoint removed")."""

    async def work(_: NotifierSettings, conn: asyncpg.Connection) -> bool:
        return await endpoints.remove(conn, endpoint_id)

    if not _run(work):
        raise click.ClickException(f"no such endpoint: {endpoint_id}")
    click.echo(f"removed {endpoint_id}")


@webhook_group.command("deliveries")
@click.argument("endpoint_id")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
def webhook_deliveries(endpoint_id: str, limit: int) -> None:
    """The endpoint's delivery log, newest first: when, delivery, event, HTTP status or
    error, milliseconds, delivery status."""

    async def work(_: NotifierSettings, conn: asyncpg.Connection) -> list[endpoints.Attempt]:
        return await endpoints.attempts(conn, endpoint_id, limit)

    for a in _run(work):
        answer = str(a.status_code) if a.status_code is not None else (a.error or "-")
        click.echo(
            f"{_when(a.attempted_at)}\t{a.delivery_id}\t{a.event_type}\t{a.event_id}\t"
            f"{answer}\t{a.duration_ms}ms\t{a.status}"
        )


def register(cli: click.Group) -> None:
    cli.add_command(notifier_group)
    cli.add_command(dlq_group)
    cli.add_command(webhook_group)
