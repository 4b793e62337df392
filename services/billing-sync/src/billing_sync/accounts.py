"""Which Stripe account serves a site, with the site's own Stripe secrets (encrypted).

A site maps to one Stripe account: the deployment's key (``BILLFOLD_STRIPE_API_KEY``) or
the site's own API key, optionally acting on a Connect account (``acct_…``). Several
sites may share an account (``account_ref`` equal); a customer of such an account
belongs to the site named in its metadata ``billfold_site``, else to the account's
default site. Decrypted secrets exist only in the :class:`SiteAccount` in memory.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import asyncpg

from billing_sync.dbtypes import Conn
from billing_sync.secrets import SecretBox

PLATFORM = "platform"
#: Stripe metadata key naming the site a customer belongs to (for shared accounts).
SITE_METADATA_KEY = "billfold_site"


@dataclass(frozen=True)
class SiteAccount:
    site_id: str
    account_ref: str
    connect_account_id: str | None
    is_default: bool
    # Decrypted; never logged (repr=False keeps them out of reprs and tracebacks).
    api_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    api_key_hint: str | None = None


def account_ref(api_key: str | None, connect_account_id: str | None) -> str:
    """The identity of the (credentials, account) pair, for grouping sites that share it.
    A key's SHA-256 (16 hex digits): keys are random, so this reveals nothing usable."""
    if api_key is None:
        base = PLATFORM
    else:
        base = "key_" + hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return f"{base}/{connect_account_id}" if connect_account_id else base


def key_hint(api_key: str) -> str:
    prefix = api_key[: api_key.index("_", 3) + 1] if api_key.count("_") >= 2 else ""
    return f"{prefix}…{api_key[-4:]}"


_COLUMNS = (
    "site_id, account_ref, connect_account_id, api_key_enc, api_key_hint, "
    "webhook_secret_enc, is_default"
)


def _from_row(box: SecretBox, row: asyncpg.Record) -> SiteAccount:
    site: str = row["site_id"]
    api_enc: bytes | None = row["api_key_enc"]
    hook_enc: bytes | None = row["webhook_secret_enc"]
    return SiteAccount(
        site_id=site,
        account_ref=row["account_ref"],
        connect_account_id=row["connect_account_id"],
        is_default=row["is_default"],
        api_key=None if api_enc is None else box.open(api_enc, site_id=site, field="api_key"),
        webhook_secret=None
        if hook_enc is None
        else box.open(hook_enc, site_id=site, field="webhook_secret"),
        api_key_hint=row["api_key_hint"],
    )


async def get(conn: Conn, box: SecretBox, site_id: str) -> SiteAccount | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM mirror.stripe_accounts WHERE site_id = $1",  # noqa: S608
        site_id,
    )
    return _from_row(box, row) if row is not None else None


async def list_all(conn: Conn, box: SecretBox) -> list[SiteAccount]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM mirror.stripe_accounts ORDER BY site_id"  # noqa: S608
    )
    return [_from_row(box, r) for r in rows]


_UNSET = object()


async def configure(
    conn: Conn,
    box: SecretBox,
    site_id: str,
    *,
    api_key: str | object | None = _UNSET,
    webhook_secret: str | object | None = _UNSET,
    connect_account_id: str | object | None = _UNSET,
    is_default: bool | None = None,
) -> SiteAccount:
    """Create or change a site's Stripe configuration; arguments left out keep their value
    (``None`` clears: no own key means the deployment's). Runs in the caller's transaction
    or its own."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('mirror.stripe_accounts'))")
        current = await get(conn, box, site_id)
        key = current.api_key if current else None
        secret = current.webhook_secret if current else None
        connect = current.connect_account_id if current else None
        default = current.is_default if current else False
        if api_key is not _UNSET:
            key = api_key  # type: ignore[assignment]
        if webhook_secret is not _UNSET:
            secret = webhook_secret  # type: ignore[assignment]
        if connect_account_id is not _UNSET:
            connect = connect_account_id  # type: ignore[assignment]
        ref = account_ref(key, connect)
        sharing = await conn.fetch(
            "SELECT site_id, is_default FROM mirror.stripe_accounts "
            "WHERE account_ref = $1 AND site_id <> $2",
            ref,
            site_id,
        )
        if is_default is not None:
            default = is_default
        elif current is None or current.account_ref != ref:
            # The first site of an account is its default; a later one is not, unless asked.
            default = not any(r["is_default"] for r in sharing)
        if default:
            await conn.execute(
                "UPDATE mirror.stripe_accounts SET is_default = false, updated_at = now() "
                "WHERE account_ref = $1 AND site_id <> $2 AND is_default",
                ref,
                site_id,
            )
        await conn.execute(
            """
            INSERT INTO mirror.stripe_accounts AS a (site_id, account_ref, connect_account_id,
                api_key_enc, api_key_hint, webhook_secret_enc, is_default)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (site_id) DO UPDATE SET
                account_ref = excluded.account_ref,
                connect_account_id = excluded.connect_account_id,
                api_key_enc = excluded.api_key_enc,
                api_key_hint = excluded.api_key_hint,
                webhook_secret_enc = excluded.webhook_secret_enc,
                is_default = excluded.is_default,
                updated_at = now()
            """,
            site_id,
            ref,
            connect,
            box.seal(key, site_id=site_id, field="api_key") if key else None,
            key_hint(key) if key else None,
            box.seal(secret, site_id=site_id, field="webhook_secret") if secret else None,
            default,
        )
    configured = await get(conn, box, site_id)
    assert configured is not None
    return configured


async def sites_of(conn: Conn | asyncpg.Pool, ref: str) -> list[tuple[str, bool]]:
    """The sites sharing account ``ref``: (site id, is default)."""
    rows = await conn.fetch(
        "SELECT site_id, is_default FROM mirror.stripe_accounts WHERE account_ref = $1", ref
    )
    return [(r["site_id"], r["is_default"]) for r in rows]


def owner_site(
    sites: list[tuple[str, bool]], account: SiteAccount, metadata_site: str | None
) -> str:
    """The site a customer of ``account``'s Stripe account belongs to, given the sites
    sharing that account (:func:`sites_of`)."""
    if metadata_site and any(site == metadata_site for site, _ in sites):
        return metadata_site
    for site, is_default in sites:
        if is_default:
            return site
    return account.site_id
