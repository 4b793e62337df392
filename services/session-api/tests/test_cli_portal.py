"""``billfold portal link`` and ``billfold portal preview``: sessions minted by an
operator through the session API's own create path."""

from __future__ import annotations

import secrets

import asyncpg

from billfold import tokens
from billfold.settings import Settings
from session_api.customers import repository as customers

from .test_cli import _one_error_line, _slug, cli


async def _site_with_customer(db_pool: asyncpg.Pool) -> tuple[str, str]:
    slug = _slug()
    assert (await cli("site", "create", "--slug", slug, "--name", "Acme")).returncode == 0
    site_id = await db_pool.fetchval("SELECT id FROM portal.sites WHERE slug = $1", slug)
    async with db_pool.acquire() as conn:
        customer = await customers.upsert(
            conn,
            site_id,
            external_id="acct-9",
            email="ada@example.com",
            name="Ada",
            stripe_id=f"cus_{secrets.token_hex(6)}",
        )
    return slug, customer.id


async def test_portal_link_mints_a_session(bf_settings: Settings, db_pool: asyncpg.Pool) -> None:
    slug, customer_id = await _site_with_customer(db_pool)
    result = await cli("portal", "link", "--site", slug, "--customer", "acct-9", "--send-email")
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip().splitlines()[-1]
    assert url.startswith(f"{bf_settings.portal_base_url}/r/{tokens.LINK_TOKEN_PREFIX}")
    assert "(emailed)" in result.stderr
    token = url.rsplit("/", 1)[1]
    row = await db_pool.fetchrow(
        "SELECT customer_id, send_email, preview, single_use, sections, "
        "expires_at - created_at AS ttl FROM portal.portal_sessions WHERE token_hash = $1",
        tokens.hash_token(token),
    )
    assert row["customer_id"] == customer_id
    assert row["send_email"] is True
    assert row["preview"] is False
    assert row["single_use"] is True
    assert row["ttl"].total_seconds() == 3600
    assert row["sections"]["profile"] == {"enabled": True, "allow_edit": True}
    # The token was printed, never stored.
    assert token not in str(dict(row))


async def test_portal_preview_is_marked_read_only(db_pool: asyncpg.Pool) -> None:
    slug, customer_id = await _site_with_customer(db_pool)
    result = await cli("portal", "preview", "--site", slug, "--customer", customer_id)
    assert result.returncode == 0, result.stderr
    assert "read-only preview" in result.stderr
    token = result.stdout.strip().rsplit("/", 1)[1]
    preview = await db_pool.fetchval(
        "SELECT preview FROM portal.portal_sessions WHERE token_hash = $1",
        tokens.hash_token(token),
    )
    assert preview is True


async def test_portal_commands_refuse_bad_input_in_one_line(db_pool: asyncpg.Pool) -> None:
    slug, _ = await _site_with_customer(db_pool)
    line = _one_error_line(await cli("portal", "link", "--site", slug, "--customer", "nobody"))
    assert "No such customer: 'nobody'" in line
    line = _one_error_line(await cli("portal", "preview", "--site", "nope", "--customer", "x"))
    assert "no such site" in line
    line = _one_error_line(await cli("portal", "link", "--site", slug, "--customer", "x" * 300))
    assert "--customer must be 1 to 255 characters" in line
