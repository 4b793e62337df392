"""Where a link was used from: the client behind our trusted proxies, never an address
a client wrote into X-Forwarded-For itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from billfold.settings import Settings
from portal_web.app import create_app as create_portal

from .conftest import Client, Tenant, create_link, link_path

SPOOF = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        ((), "127.0.0.1"),  # no proxy configured: the header is the client's word
        (("10.0.0.0/8",), "127.0.0.1"),  # the peer is not one of our proxies
        (("127.0.0.0/8",), "203.0.113.9"),  # our proxy: its hop, not the client's 6.6.6.6
    ],
)
async def test_link_use_records_the_client_behind_trusted_proxies_only(
    aiohttp_client: Callable[..., Any],
    api: Client,
    bf_settings: Settings,
    tenant: Tenant,
    trusted: tuple[str, ...],
    expected: str,
) -> None:
    settings = bf_settings.model_copy(update={"trusted_proxies": trusted})
    portal: Client = await aiohttp_client(create_portal(settings))
    created = await create_link(api, tenant)
    resp = await portal.post(link_path(created), headers=SPOOF, allow_redirects=False)
    assert resp.status == 303
    got = await (await api.get(f"/v1/portal_sessions/{created['id']}", headers=tenant.auth)).json()
    assert got["used_ip"] == expected
