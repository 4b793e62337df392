"""session-api's operator commands: ``billfold site …``, ``billfold key …``, ``billfold demo``.

Registered on the shared ``billfold`` CLI through the ``billfold.cli`` entry point.
Bad input is one ``Error: …`` line on stderr and exit code 2, never a usage dump or a
traceback; an unreachable database is one line and exit code 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from billfold.cli import (
    SITE_UPDATE_GROUP,
    Command,
    Group,
    InputError,
    extensible,
    run_database_command,
)
from billfold.db import create_pool
from billfold.logs import configure_logging
from billfold.settings import Settings, load_settings
from session_api.dbtypes import Conn
from session_api.keys import repository as keys
from session_api.portal_sessions.schemas import TTL_MAX, TTL_MIN
from session_api.sites import repository as sites

T = TypeVar("T")

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_LOCALE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")


def _run(work: Callable[[Settings, Conn], Awaitable[T]]) -> T:
    """Run ``work`` with settings, logging and one database connection."""
    settings = load_settings()
    configure_logging("billfold-cli", settings)

    async def main() -> T:
        pool = await create_pool(settings, min_size=1, max_size=1)
        try:
            async with pool.acquire() as conn:
                return await work(settings, conn)
        finally:
            await pool.close()

    return run_database_command(main(), schema="portal")


def _http_url(value: str, option: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{option} must be an absolute http(s) URL, got {value!r}")
    return value


def _origin(value: str) -> str:
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise InputError(
            f"--frame-ancestor must be an origin such as https://app.example.com, got {value!r}"
        )
    return f"{parts.scheme}://{parts.netloc}"


async def _site(conn: Conn, ref: str) -> sites.Site:
    site = await sites.get_by_slug(conn, ref)
    if site is None:
        site = next((s for s in await sites.list_all(conn) if s.id == ref), None)
    if site is None:
        raise InputError(f"no such site: {ref!r} (see `billfold site list`)")
    return site


# --- site -----------------------------------------------------------------------------


@click.group(cls=Group)
def site() -> None:
    """Sites (tenants): create, list, update."""


@site.command("create")
@click.option("--slug", required=True, help="URL-safe name, e.g. acme.")
@click.option("--name", required=True, help="Display name.")
@click.option("--primary-color", help="Brand colour, #rrggbb.")
@click.option("--accent-color", help="Accent colour, #rrggbb.")
@click.option("--logo-url", help="https URL of the logo.")
@click.option("--support-email", help="Shown to customers.")
@click.option("--default-locale", default="en", show_default=True)
@click.option("--session-ttl", type=int, help=f"Default link lifetime, {TTL_MIN}..{TTL_MAX} s.")
@click.option("--frame-ancestor", "frame_ancestors", multiple=True, help="Origin allowed to embed.")
def site_create(
    slug: str,
    name: str,
    primary_color: str | None,
    accent_color: str | None,
    logo_url: str | None,
    support_email: str | None,
    default_locale: str,
    session_ttl: int | None,
    frame_ancestors: tuple[str, ...],
) -> None:
    """Create a site."""
    if not _SLUG.match(slug):
        raise InputError(
            f"--slug must be lower-case letters, digits and dashes (max 63), got {slug!r}"
        )
    if not name.strip() or len(name) > 200:
        raise InputError("--name must be 1 to 200 characters")
    for option, colour in (("--primary-color", primary_color), ("--accent-color", accent_color)):
        if colour is not None and not _COLOR.match(colour):
            raise InputError(f"{option} must be a hex colour such as #1a73e8, got {colour!r}")
    if logo_url is not None:
        _http_url(logo_url, "--logo-url")
    if support_email is not None and not _EMAIL.match(support_email):
        raise InputError(f"--support-email is not an email address: {support_email!r}")
    if not _LOCALE.match(default_locale):
        raise InputError(f"--default-locale must be a language tag, got {default_locale!r}")
    if session_ttl is not None and not TTL_MIN <= session_ttl <= TTL_MAX:
        raise InputError(f"--session-ttl must be between {TTL_MIN} and {TTL_MAX}")
    origins = [_origin(v) for v in frame_ancestors]

    async def work(_: Settings, conn: Conn) -> sites.Site:
        try:
            return await sites.create(
                conn,
                slug=slug,
                name=name.strip(),
                logo_url=logo_url,
                primary_color=primary_color,
                accent_color=accent_color,
                support_email=support_email,
                default_locale=default_locale,
                frame_ancestors=origins,
                default_session_ttl=session_ttl,
            )
        except sites.SlugTaken:
            raise InputError(f"a site with slug {slug!r} already exists") from None

    created = _run(work)
    click.echo(f"created site {created.id} ({created.slug})")


@site.command("list")
def site_list() -> None:
    """List sites."""

    async def work(_: Settings, conn: Conn) -> list[sites.Site]:
        return await sites.list_all(conn)

    for s in _run(work):
        click.echo(f"{s.id}\t{s.slug}\t{s.name}\t{s.created_at:%Y-%m-%dT%H:%M:%SZ}")


SIGN_IN_TTL_MIN = 300
SIGN_IN_TTL_MAX = 7 * 24 * 3600


@site.command("update")
@click.argument("site_ref", metavar="SITE")
@click.option(
    "--sign-in-ttl",
    type=int,
    help=f"Lifetime of a session opened by email sign-in, {SIGN_IN_TTL_MIN}..{SIGN_IN_TTL_MAX} s.",
)
@click.option(
    "--account-label-field",
    "label_fields",
    multiple=True,
    help="Customer field labelling an account in the sign-in chooser (repeatable, in "
    f"order): {', '.join(sites.ACCOUNT_LABEL_FIELDS)}.",
)
@extensible(SITE_UPDATE_GROUP, subject="site_ref")
def site_update(site_ref: str, sign_in_ttl: int | None, label_fields: tuple[str, ...]) -> None:
    """Change a site's settings (SITE: slug or id). Other installed services add their
    options here (billing-sync: --stripe-api-key, --stripe-webhook-secret,
    --stripe-account); this body runs only when one of its own options is given."""
    if sign_in_ttl is not None and not SIGN_IN_TTL_MIN <= sign_in_ttl <= SIGN_IN_TTL_MAX:
        raise InputError(f"--sign-in-ttl must be between {SIGN_IN_TTL_MIN} and {SIGN_IN_TTL_MAX}")
    for field in label_fields:
        if field not in sites.ACCOUNT_LABEL_FIELDS:
            raise InputError(
                f"--account-label-field must be one of {', '.join(sites.ACCOUNT_LABEL_FIELDS)}, "
                f"got {field!r}"
            )

    async def work(_: Settings, conn: Conn) -> sites.Site:
        target = await _site(conn, site_ref)
        return await sites.update_sign_in(
            conn,
            target.id,
            sign_in_ttl=sign_in_ttl,
            account_label_fields=list(label_fields) or None,
        )

    updated = _run(work)
    click.echo(
        f"updated site {updated.id} ({updated.slug}): sign-in ttl {updated.sign_in_ttl} s, "
        f"account labels {','.join(updated.account_label_fields)}"
    )


# --- key ------------------------------------------------------------------------------


@click.group(cls=Group)
def key() -> None:
    """API keys: create, list, revoke."""


@key.command("create")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
@click.option("--kind", type=click.Choice(["secret", "publishable"]), required=True)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["portal_sessions:write", "portal_sessions:read", "customers:read"]),
    help="Limit a secret key (repeatable); default: all scopes.",
)
def key_create(site_ref: str, kind: str, scopes: tuple[str, ...]) -> None:
    """Create a key; the key is printed once, alone on the last line."""
    if scopes and kind != "secret":
        raise InputError("--scope applies to secret keys only")

    async def work(_: Settings, conn: Conn) -> tuple[keys.ApiKey, str]:
        target = await _site(conn, site_ref)
        return await keys.create(
            conn,
            target.id,
            "secret" if kind == "secret" else "publishable",
            list(scopes) or None,
        )

    record, secret = _run(work)
    click.echo(f"created {record.kind} key {record.id} for site {record.site_id}", err=True)
    click.echo("store it now: it is shown only once", err=True)
    click.echo(secret)


@key.command("list")
@click.option("--site", "site_ref", required=True, help="Site slug or id.")
def key_list(site_ref: str) -> None:
    """List a site's keys (hints only, never the keys)."""

    async def work(_: Settings, conn: Conn) -> list[keys.ApiKey]:
        return await keys.list_for_site(conn, (await _site(conn, site_ref)).id)

    for k in _run(work):
        state = f"revoked {k.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if k.revoked_at else "active"
        scopes = ",".join(k.scopes) if k.scopes is not None else "all"
        click.echo(f"{k.id}\t{k.kind}\t{k.hint}\t{scopes}\t{state}")


@key.command("revoke")
@click.argument("key_id")
def key_revoke(key_id: str) -> None:
    """Revoke a key by id (key_…); takes effect on the next request."""
    if not re.fullmatch(r"key_[0-9a-f]{1,64}", key_id):
        raise InputError(f"not a key id (key_…): {key_id!r}")

    async def work(_: Settings, conn: Conn) -> keys.ApiKey | None:
        return await keys.revoke(conn, key_id)

    revoked = _run(work)
    if revoked is None:
        raise InputError(f"no such key: {key_id!r}")
    click.echo(f"revoked {revoked.id}")


# --- demo -----------------------------------------------------------------------------


@click.command(cls=Command)
def demo() -> None:
    """Ensure the demo site, mint a secret key for it, print them as JSON."""
    from session_api.demo import run_demo

    async def work(settings: Settings, conn: Conn) -> dict[str, Any]:
        return await run_demo(settings, conn)

    click.echo(json.dumps(_run(work)))


def register(root: click.Group) -> None:
    """Entry point of the ``billfold.cli`` group; the commands arrive with the service."""
    root.add_command(site)
    root.add_command(key)
    root.add_command(demo)
    # These import this module: registered last.
    from session_api.domain_cli import domain
    from session_api.portal_cli import portal

    site.add_command(domain)
    root.add_command(portal)
