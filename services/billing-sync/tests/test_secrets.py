"""Per-site Stripe secrets: encrypted at rest, bound to their site and field, never shown."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

import asyncpg
import pytest

from billing_sync import accounts
from billing_sync.secrets import SecretBox, SecretDecryptError

from .conftest import Eventually, LogCapture, Synced, new_site

API_KEY = "sk_live_" + "Q7" * 20
WEBHOOK_SECRET = "whsec_" + "Mx9" * 12


def test_sealed_secrets_open_only_for_their_site_and_field() -> None:
    box = SecretBox(os.urandom(32))
    blob = box.seal(API_KEY, site_id="site_a", field="api_key")
    assert API_KEY.encode() not in blob
    assert box.open(blob, site_id="site_a", field="api_key") == API_KEY
    with pytest.raises(SecretDecryptError):
        box.open(blob, site_id="site_b", field="api_key")  # copied to another site
    with pytest.raises(SecretDecryptError):
        box.open(blob, site_id="site_a", field="webhook_secret")  # moved to another column
    with pytest.raises(SecretDecryptError):
        SecretBox(os.urandom(32)).open(blob, site_id="site_a", field="api_key")  # other key
    # Same plaintext, fresh nonce: equal secrets do not look equal at rest.
    assert box.seal(API_KEY, site_id="site_a", field="api_key") != blob


async def test_the_raw_columns_never_hold_the_secrets(
    db_pool: asyncpg.Pool, box: SecretBox
) -> None:
    site = await new_site(db_pool)
    async with db_pool.acquire() as conn:
        configured = await accounts.configure(
            conn, box, site, api_key=API_KEY, webhook_secret=WEBHOOK_SECRET
        )
    assert configured.api_key == API_KEY
    assert configured.webhook_secret == WEBHOOK_SECRET
    assert API_KEY not in repr(configured)
    assert WEBHOOK_SECRET not in repr(configured)
    row = await db_pool.fetchrow("SELECT * FROM mirror.stripe_accounts WHERE site_id = $1", site)
    raw = b"".join(v if isinstance(v, bytes) else str(v).encode() for v in dict(row).values())
    for secret in (API_KEY, WEBHOOK_SECRET):
        assert secret.encode() not in raw
        assert secret[8:].encode() not in raw  # not even the random part
    assert row["api_key_hint"] == "sk_live_…Q7Q7"


async def test_sites_sharing_an_account_have_one_default(
    db_pool: asyncpg.Pool, box: SecretBox
) -> None:
    key = f"sk_test_{secrets.token_hex(12)}"
    first, second = await new_site(db_pool), await new_site(db_pool)
    async with db_pool.acquire() as conn:
        a = await accounts.configure(conn, box, first, api_key=key)
        b = await accounts.configure(conn, box, second, api_key=key)
        assert a.account_ref == b.account_ref
        assert (a.is_default, b.is_default) == (True, False)
        assert accounts.owner_site(await accounts.sites_of(conn, b.account_ref), b, None) == first
        assert (
            accounts.owner_site(await accounts.sites_of(conn, a.account_ref), a, second) == second
        )
        assert (
            accounts.owner_site(await accounts.sites_of(conn, a.account_ref), a, "site_elsewhere")
            == first
        )
        await accounts.configure(conn, box, second, is_default=True)
        assert accounts.owner_site(await accounts.sites_of(conn, a.account_ref), a, None) == second


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from billfold.cli import main; main()", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )


async def test_cli_configures_a_site_and_never_prints_a_secret(
    db_pool: asyncpg.Pool, box: SecretBox
) -> None:
    site = await new_site(db_pool)
    slug = await db_pool.fetchval("SELECT slug FROM portal.sites WHERE id = $1", site)
    done = _cli(
        "stripe",
        "configure",
        "--site",
        slug,
        "--stripe-api-key",
        "-",
        "--stripe-webhook-secret",
        WEBHOOK_SECRET,
        "--stripe-account",
        "acct_1Test",
        stdin=API_KEY + "\n",
    )
    assert done.returncode == 0, done.stderr
    shown = _cli("stripe", "show", "--site", site)
    listed = _cli("stripe", "list")
    for proc in (done, shown, listed):
        out = proc.stdout + proc.stderr
        assert API_KEY not in out
        assert WEBHOOK_SECRET not in out
        assert API_KEY[8:20] not in out
        assert WEBHOOK_SECRET[6:18] not in out
    assert "api key: sk_live_…Q7Q7" in shown.stdout
    assert "connect account: acct_1Test" in shown.stdout
    assert f"webhook endpoint path: /stripe/webhooks/{site}" in shown.stdout
    async with db_pool.acquire() as conn:
        stored = await accounts.get(conn, box, site)
    assert stored is not None
    assert (stored.api_key, stored.webhook_secret) == (API_KEY, WEBHOOK_SECRET)
    assert stored.connect_account_id == "acct_1Test"
    # Back to the deployment key: the site's own key is gone from the row.
    assert _cli("stripe", "configure", "--site", site, "--use-deployment-key").returncode == 0
    row = await db_pool.fetchrow(
        "SELECT api_key_enc, api_key_hint FROM mirror.stripe_accounts WHERE site_id = $1", site
    )
    assert (row["api_key_enc"], row["api_key_hint"]) == (None, None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stripe-api-key", "pk_live_notasecretkey"], "--stripe-api-key must be a Stripe"),
        (["--stripe-webhook-secret", "nope_" + "x" * 20], "--stripe-webhook-secret must be"),
        (["--stripe-account", "acct_!"], "--stripe-account must be"),
    ],
)
async def test_cli_bad_input_is_one_line_without_the_value(
    db_pool: asyncpg.Pool, args: list[str], message: str
) -> None:
    site = await new_site(db_pool)
    proc = _cli("stripe", "configure", "--site", site, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]
    if "account" not in args[0]:
        assert args[1] not in proc.stderr


def test_cli_needs_the_secrets_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "BILLFOLD_BILLING_SECRETS_KEY"}
    proc = subprocess.run(
        [sys.executable, "-c", "from billfold.cli import main; main()", "stripe", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 2
    assert "BILLFOLD_BILLING_SECRETS_KEY" in proc.stderr


async def test_secrets_never_reach_the_logs(
    synced: Synced, logs: LogCapture, eventually: Eventually
) -> None:
    customer = await synced.api.v1.customers.create_async(params={"email": "log@example.com"})
    await synced.api.v1.customers.update_async(customer.id, params={"name": "Logged"})
    await synced.settled(eventually)
    text = logs.text()
    assert "stripe_webhook_accepted" in text  # the service did log while working
    for secret in (synced.api_key, synced.webhook_secret):
        assert secret not in text
        assert secret[8:] not in text


async def test_site_update_takes_the_stripe_options_into_billing_syncs_schema(
    db_pool: asyncpg.Pool, box: SecretBox
) -> None:
    """`billfold site update S --stripe-api-key … --stripe-webhook-secret …`: session-api's
    command, billing-sync's options (entry point billfold.cli.site_update)."""
    site = await new_site(db_pool)
    slug = await db_pool.fetchval("SELECT slug FROM portal.sites WHERE id = $1", site)
    done = _cli(
        "site",
        "update",
        slug,
        "--stripe-api-key",
        "-",
        "--stripe-webhook-secret",
        WEBHOOK_SECRET,
        stdin=API_KEY + "\n",
    )
    assert done.returncode == 0, done.stderr
    assert API_KEY not in done.stdout + done.stderr
    assert WEBHOOK_SECRET not in done.stdout + done.stderr
    assert "api key: sk_live_…Q7Q7" in done.stdout
    async with db_pool.acquire() as conn:
        stored = await accounts.get(conn, box, site)
    assert stored is not None
    assert (stored.api_key, stored.webhook_secret) == (API_KEY, WEBHOOK_SECRET)
    # Checked like `billfold stripe configure`; nothing given is a usage error.
    bad = _cli("site", "update", site, "--stripe-webhook-secret", "nope_" + "x" * 20)
    assert bad.returncode == 2
    assert "--stripe-webhook-secret must be" in bad.stderr
    assert "nope_" not in bad.stderr
    empty = _cli("site", "update", site)
    assert empty.returncode == 2
    assert "nothing to update" in empty.stderr
    assert "--stripe-api-key" in empty.stderr
