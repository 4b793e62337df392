"""``billfold site domain add|list|remove``."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from billfold.cli import InputError
from session_api.domain_cli import check_host

from .test_cli import _one_error_line, _slug, cli


@pytest.mark.timeout(300)  # nine CLI processes on a loaded machine
async def test_domain_add_list_remove(db_pool: asyncpg.Pool) -> None:
    slug, other = _slug(), _slug()
    for s in (slug, other):
        assert (await cli("site", "create", "--slug", s, "--name", "Acme")).returncode == 0
    host = f"billing-{secrets.token_hex(3)}.acme.example"
    added = await cli("site", "domain", "add", "--site", slug, host.upper() + ".")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(f"{host} now serves site site_")
    listed = await cli("site", "domain", "list", "--site", slug)
    assert listed.stdout.splitlines() == [host]
    taken = _one_error_line(await cli("site", "domain", "add", "--site", other, host))
    assert "is already a domain of site" in taken
    line = _one_error_line(await cli("site", "domain", "add", "--site", slug, "x.example:443"))
    assert "not a host name such as billing.example.com" in line
    removed = await cli("site", "domain", "remove", host)
    assert removed.returncode == 0
    assert (
        await db_pool.fetchval("SELECT count(*) FROM portal.site_domains WHERE domain = $1", host)
        == 0
    )
    assert "no such domain" in _one_error_line(await cli("site", "domain", "remove", host))


@pytest.mark.parametrize(
    "bad", ["https://x.example", "x.example:443", "localhost", "10.0.0.1", "-a.example", "a..b"]
)
def test_domain_names_are_checked(bad: str) -> None:
    with pytest.raises(InputError):
        check_host(bad)


def test_domain_names_are_normalised() -> None:
    assert check_host(" Billing.Acme-Corp.COM. ") == "billing.acme-corp.com"
