"""``billfold site update``: the sign-in settings of a site (lifetime, chooser labels)."""

from __future__ import annotations

import asyncpg

from .test_cli import _one_error_line, _slug, cli


async def test_site_update_sign_in_settings(db_pool: asyncpg.Pool) -> None:
    slug = _slug()
    assert (await cli("site", "create", "--slug", slug, "--name", "Acme")).returncode == 0
    row = await db_pool.fetchrow(
        "SELECT sign_in_ttl, account_label_fields FROM portal.sites WHERE slug = $1", slug
    )
    assert row["sign_in_ttl"] == 3600
    assert list(row["account_label_fields"]) == ["name", "email"]

    result = await cli(
        "site", "update", slug, "--sign-in-ttl", "1800",
        "--account-label-field", "name", "--account-label-field", "external_id",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "sign-in ttl 1800 s, account labels name,external_id" in result.stdout
    row = await db_pool.fetchrow(
        "SELECT sign_in_ttl, account_label_fields FROM portal.sites WHERE slug = $1", slug
    )
    assert row["sign_in_ttl"] == 1800
    assert list(row["account_label_fields"]) == ["name", "external_id"]
    # One setting alone leaves the other.
    assert (await cli("site", "update", slug, "--sign-in-ttl", "600")).returncode == 0
    row = await db_pool.fetchrow(
        "SELECT sign_in_ttl, account_label_fields FROM portal.sites WHERE slug = $1", slug
    )
    assert (row["sign_in_ttl"], list(row["account_label_fields"])) == (600, ["name", "external_id"])


async def test_site_update_bad_input_is_one_line() -> None:
    slug = _slug()
    assert (await cli("site", "create", "--slug", slug, "--name", "Acme")).returncode == 0
    for args, words in (
        (["--sign-in-ttl", "10"], "--sign-in-ttl must be between 300 and 604800"),
        (["--account-label-field", "password"], "--account-label-field must be one of"),
        ([], "nothing to update"),
    ):
        line = _one_error_line(await cli("site", "update", slug, *args))
        assert words in line, line
    line = _one_error_line(await cli("site", "update", "nope", "--sign-in-ttl", "600"))
    assert "no such site" in line
