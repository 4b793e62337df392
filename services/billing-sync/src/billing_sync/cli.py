"""billing-sync's operator commands: ``billfold stripe …`` and ``billfold sync``.

``billfold stripe configure --site S`` sets which Stripe account serves a site and
stores the site's webhook signing secret and (optionally) its own API key, encrypted
(``billing_sync.secrets``). A secret given as ``-`` is read from standard input, so it
stays out of the shell history and the process list. Secrets are never printed back:
``show`` and ``list`` give hints only. The same options also work on session-api's
``billfold site update S --stripe-api-key … --stripe-webhook-secret …``: billing-sync
publishes them (:data:`SITE_UPDATE`) under the ``billfold.cli.site_update`` entry point,
so neither service imports the other and the secrets still go to billing-sync's schema.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from stripe import StripeError

from billfold.cli import Command, CommandExtension, Group, InputError, run_database_command
from billfold.db import create_pool
from billfold.logs import configure_logging, redact_text
from billfold.settings import load_settings
from billing_sync import accounts, demo
from billing_sync.app import quiet_stripe_library
from billing_sync.dbtypes import Conn
from billing_sync.reconcile import reconcile_site
from billing_sync.secrets import SecretBox
from billing_sync.settings import BillingSyncSettings, new_secrets_key
from billing_sync.stripe_api import (
    NoStripeKey,
    StripeGateway,
    idempotency_key,
    write_options,
)

T = TypeVar("T")

_API_KEY = re.compile(r"^(sk|rk)_(test|live)_[A-Za-z0-9]{8,255}$")
_WEBHOOK_SECRET = re.compile(r"^whsec_[A-Za-z0-9+/=]{8,255}$")
_ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]{1,255}$")


def _run(work: Callable[[BillingSyncSettings, SecretBox, Conn], Awaitable[T]]) -> T:
    settings = load_settings(BillingSyncSettings)
    configure_logging("billfold-cli", settings)
    box = SecretBox(settings.secrets_key_bytes())

    async def main() -> T:
        pool = await create_pool(settings, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await work(settings, box, conn)
        finally:
            await pool.close()

    return run_database_command(main(), schema="mirror")


async def _site_id(conn: Conn, ref: str) -> str:
    """A site id from its id or slug (read from session-api's ``portal.sites``)."""
    found = await conn.fetchval(
        "SELECT id FROM portal.sites WHERE id = $1 OR slug = $1 ORDER BY id = $1 DESC LIMIT 1",
        ref,
    )
    if found is None:
        raise InputError(f"no such site: {ref!r} (see `billfold site list`)")
    return str(found)


def _secret(value: str | None, option: str, pattern: re.Pattern[str], what: str) -> str | None:
    """The option's value (``-``: one line from stdin), checked; never echoed in errors."""
    if value is None:
        return None
    if value == "-":
        value = sys.stdin.readline().strip()
    if not pattern.match(value):
        raise InputError(f"{option} must be {what}")
    return value


@click.group(cls=Group)
def stripe() -> None:
    """Which Stripe account serves each site, and its secrets (stored encrypted)."""


@stripe.command("configure")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
@click.option(
    "--stripe-api-key",
    help="The site's own secret key (sk_… or rk_…), '-' to read it from stdin. "
    "Default: the deployment's BILLFOLD_STRIPE_API_KEY.",
)
@click.option(
    "--use-deployment-key", is_flag=True, help="Forget the site's own key; use the deployment's."
)
@click.option("--stripe-webhook-secret", help="The endpoint's signing secret (whsec_…), or '-'.")
@click.option("--stripe-account", help="Stripe Connect account id (acct_…) to act on.")
@click.option("--no-stripe-account", is_flag=True, help="Stop acting on a Connect account.")
@click.option(
    "--default-site/--not-default-site",
    default=None,
    help="Customers of a shared Stripe account without metadata billfold_site belong "
    "to its default site.",
)
def configure(
    site_ref: str,
    stripe_api_key: str | None,
    use_deployment_key: bool,
    stripe_webhook_secret: str | None,
    stripe_account: str | None,
    no_stripe_account: bool,
    default_site: bool | None,
) -> None:
    """Create or change a site's Stripe configuration."""
    _configure(
        site_ref,
        stripe_api_key=stripe_api_key,
        use_deployment_key=use_deployment_key,
        stripe_webhook_secret=stripe_webhook_secret,
        stripe_account=stripe_account,
        no_stripe_account=no_stripe_account,
        default_site=default_site,
    )


def _configure(
    site_ref: str,
    *,
    stripe_api_key: str | None = None,
    use_deployment_key: bool = False,
    stripe_webhook_secret: str | None = None,
    stripe_account: str | None = None,
    no_stripe_account: bool = False,
    default_site: bool | None = None,
) -> None:
    if stripe_api_key is not None and use_deployment_key:
        raise InputError("--stripe-api-key and --use-deployment-key exclude each other")
    if stripe_account is not None and no_stripe_account:
        raise InputError("--stripe-account and --no-stripe-account exclude each other")
    if stripe_account is not None and not _ACCOUNT.match(stripe_account):
        raise InputError(
            f"--stripe-account must be a Connect account id (acct_…), got {stripe_account!r}"
        )
    key = _secret(
        stripe_api_key, "--stripe-api-key", _API_KEY, "a Stripe secret key (sk_… or rk_…)"
    )
    secret = _secret(
        stripe_webhook_secret,
        "--stripe-webhook-secret",
        _WEBHOOK_SECRET,
        "a signing secret (whsec_…)",
    )
    changes: dict[str, Any] = {}
    if key is not None or use_deployment_key:
        changes["api_key"] = key
    if secret is not None:
        changes["webhook_secret"] = secret
    if stripe_account is not None or no_stripe_account:
        changes["connect_account_id"] = stripe_account
    if default_site is not None:
        changes["is_default"] = default_site

    async def work(_: BillingSyncSettings, box: SecretBox, conn: Conn) -> accounts.SiteAccount:
        site_id = await _site_id(conn, site_ref)
        return await accounts.configure(conn, box, site_id, **changes)

    _echo(_run(work))


@stripe.command("show")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
def show(site_ref: str) -> None:
    """A site's Stripe configuration (hints only, never a secret)."""

    async def work(_: BillingSyncSettings, box: SecretBox, conn: Conn) -> accounts.SiteAccount:
        site_id = await _site_id(conn, site_ref)
        found = await accounts.get(conn, box, site_id)
        if found is None:
            raise InputError(f"site {site_ref!r} has no Stripe configuration yet")
        return found

    _echo(_run(work))


@stripe.command("list")
def list_() -> None:
    """Every configured site, one line each (hints only)."""

    async def work(
        _: BillingSyncSettings, box: SecretBox, conn: Conn
    ) -> list[accounts.SiteAccount]:
        return await accounts.list_all(conn, box)

    for account in _run(work):
        click.echo(
            f"{account.site_id}\t{account.account_ref}\t{account.connect_account_id or '-'}\t"
            f"{account.api_key_hint or 'deployment key'}\t"
            f"{'webhook secret set' if account.webhook_secret else 'no webhook secret'}\t"
            f"{'default' if account.is_default else ''}"
        )


def _client_account(account: accounts.SiteAccount | None, site_id: str) -> accounts.SiteAccount:
    """The site's account, or (not configured yet) the deployment's key for it."""
    return account or accounts.SiteAccount(
        site_id=site_id, account_ref=accounts.PLATFORM, connect_account_id=None, is_default=False
    )


def _stripe_run(work: Callable[[StripeGateway, SecretBox, Conn], Awaitable[T]]) -> T:
    """:func:`_run` with a Stripe gateway, and Stripe's refusals as one clear line."""
    quiet_stripe_library()

    async def with_gateway(settings: BillingSyncSettings, box: SecretBox, conn: Conn) -> T:
        gateway = StripeGateway(settings)
        try:
            return await work(gateway, box, conn)
        finally:
            await gateway.close()

    try:
        return _run(with_gateway)
    except (StripeError, NoStripeKey) as exc:
        raise click.ClickException(f"Stripe refused: {redact_text(str(exc))[:300]}") from None


@stripe.command("webhook-register")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
@click.option(
    "--url",
    "base_url",
    required=True,
    help="billing-sync's address as Stripe reaches it (e.g. https://billing.example.com); "
    "the endpoint is <url>/stripe/webhooks/<site id>.",
)
def webhook_register(site_ref: str, base_url: str) -> None:
    """Create the site's webhook endpoint at Stripe and store its signing secret.

    An endpoint Stripe already has for the same URL is deleted first: Stripe shows a
    signing secret only when it creates the endpoint, so a new one is the only way to
    learn it again."""
    if not base_url.startswith(("http://", "https://")):
        raise InputError("--url must start with http:// or https://")

    async def work(gateway: StripeGateway, box: SecretBox, conn: Conn) -> accounts.SiteAccount:
        site_id = await _site_id(conn, site_ref)
        url = f"{base_url.rstrip('/')}/stripe/webhooks/{site_id}"
        client = gateway.client(_client_account(await accounts.get(conn, box, site_id), site_id))
        endpoints = await client.v1.webhook_endpoints.list_async(params={"limit": 100})
        async for old in endpoints.auto_paging_iter():
            if old.url == url:
                await client.v1.webhook_endpoints.delete_async(old.id)
        endpoint = await client.v1.webhook_endpoints.create_async(
            params={"url": url, "enabled_events": ["*"]},
            # A fresh endpoint each time (see above): the key is unique to this run,
            # and the library's own retries of this request reuse it.
            options=write_options(idempotency_key("webhook-endpoint", url, new_secrets_key())),
        )
        if not endpoint.secret:
            raise click.ClickException("Stripe returned no signing secret for the endpoint")
        return await accounts.configure(conn, box, site_id, webhook_secret=endpoint.secret)

    account = _stripe_run(work)
    _echo(account)


@stripe.command("demo")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=60.0,
    show_default=True,
    help="Seconds to wait until the mirror shows it all (0: do not wait).",
)
def demo_(site_ref: str, wait: float) -> None:
    """Create demo customers with plans, cards and invoices in the site's Stripe account
    (test mode), print them as JSON once the mirror has them. Safe to run again."""

    async def work(gateway: StripeGateway, box: SecretBox, conn: Conn) -> dict[str, Any]:
        site_id = await _site_id(conn, site_ref)
        account = await accounts.get(conn, box, site_id)
        if account is None:
            raise InputError(
                f"site {site_ref!r} has no Stripe configuration: run "
                "`billfold stripe configure` or `billfold stripe webhook-register` first"
            )
        if gateway.is_live(account):
            raise InputError("the demo writes test data: it refuses a live-mode Stripe key")
        seeded = await demo.seed(gateway.client(account), site_id)
        missing = await demo.wait_mirrored(conn, site_id, seeded, wait) if wait else []
        if missing and demo.usage_only(missing):
            click.echo(
                f"note: Stripe has not summarised the demo's metered usage yet ({missing[0]}); "
                "the mirror shows it after the next refresh "
                f"(`billfold sync --site {site_ref}`)",
                err=True,
            )
        elif missing:
            raise click.ClickException(
                f"the mirror does not show {len(missing)} demo object(s) after {wait:g}s "
                f"(first: {missing[0]}); are Stripe's webhooks reaching billing-sync? "
                f"`billfold sync --site {site_ref}` backfills without them"
            )
        return {"site": site_id, "customers": [s.summary() for s in seeded]}

    click.echo(json.dumps(_stripe_run(work), indent=2))


@click.command("sync", cls=Command)
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
def sync(site_ref: str) -> None:
    """Backfill or repair a site's mirror now: list its Stripe account and mirror it all."""
    settings = load_settings(BillingSyncSettings)
    configure_logging("billfold-cli", settings)
    quiet_stripe_library()
    box = SecretBox(settings.secrets_key_bytes())
    tty = sys.stderr.isatty()
    last = [0]

    def show(tally: Tally[str]) -> None:
        line = "  ".join(f"{kind.replace('_', ' ')} {tally[kind]}" for kind in _KINDS)
        if tty:
            click.echo(f"\r{line}", nl=False, err=True)
        elif tally["customers"] - last[0] >= 100:  # a line per 100 customers in logs
            last[0] = tally["customers"]
            click.echo(line, err=True)

    async def main() -> Tally[str]:
        pool = await create_pool(settings, min_size=1, max_size=2)
        gateway = StripeGateway(settings)
        try:
            async with pool.acquire() as conn:
                site_id = await _site_id(conn, site_ref)
                if await accounts.get(conn, box, site_id) is None:
                    raise InputError(
                        f"site {site_ref!r} has no Stripe configuration: "
                        "run `billfold stripe configure` first"
                    )
            return await reconcile_site(pool, gateway, box, site_id, progress=show)
        finally:
            await gateway.close()
            await pool.close()

    try:
        tally = run_database_command(main(), schema="mirror")
    except (StripeError, NoStripeKey) as exc:
        raise click.ClickException(f"Stripe refused: {redact_text(str(exc))[:300]}") from None
    if tty:
        click.echo("", err=True)
    click.echo("synced " + ", ".join(f"{tally[kind]} {kind.replace('_', ' ')}" for kind in _KINDS))


_KINDS = ("customers", "subscriptions", "invoices", "payment_methods")


def _echo(account: accounts.SiteAccount) -> None:
    click.echo(f"site: {account.site_id}")
    click.echo(f"stripe account: {account.account_ref}")
    click.echo(f"connect account: {account.connect_account_id or '-'}")
    click.echo(f"api key: {account.api_key_hint or 'the deployment key'}")
    click.echo(f"webhook secret: {'set' if account.webhook_secret else 'not set'}")
    click.echo(f"default site of its account: {'yes' if account.is_default else 'no'}")
    click.echo(f"webhook endpoint path: /stripe/webhooks/{account.site_id}")


#: ``billfold site update SITE --stripe-api-key … --stripe-webhook-secret whsec_…``:
#: these options on session-api's command (entry point ``billfold.cli.site_update``);
#: the values go to :func:`_configure`, as with ``billfold stripe configure``.
SITE_UPDATE = CommandExtension(
    params=[
        click.Option(
            ["--stripe-api-key"],
            help="The site's own Stripe secret key (sk_… or rk_…), '-' to read it from "
            "stdin (stored encrypted by billing-sync).",
        ),
        click.Option(
            ["--stripe-webhook-secret"],
            help="The site's Stripe webhook signing secret (whsec_…), or '-'.",
        ),
        click.Option(["--stripe-account"], help="Stripe Connect account id (acct_…)."),
    ],
    apply=lambda site_ref, values: _configure(site_ref, **values),
)


def register(root: click.Group) -> None:
    """Entry point of the ``billfold.cli`` group."""
    root.add_command(stripe)
    root.add_command(sync)
