"""Nothing a test run creates can get in another run's (or a developer's) way."""

from __future__ import annotations

import os
from typing import Any

import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from billfold import tokens
from billfold.settings import Settings

from .conftest import Tenant, create_session


async def test_run_uses_its_own_slice(bf_settings: Settings) -> None:
    name = bf_settings.database_url.rsplit("/", 1)[1]
    assert name.startswith("billfold_test_")
    assert bf_settings.amqp_url.endswith("/" + name)  # own RabbitMQ vhost
    assert bf_settings.redis_prefix == f"bft:{name}:"
    # Subprocesses (the CLI tests) inherit the slice, not the developer's database.
    assert os.environ["BILLFOLD_DATABASE_URL"] == bf_settings.database_url


async def test_redis_keys_stay_under_the_run_prefix(
    client: TestClient[Any, Any],
    tenant: Tenant,
    redis_client: aioredis.Redis,
    bf_settings: Settings,
) -> None:
    created = await create_session(client, tenant)
    digest = tokens.hash_token(created["token"])
    found = [k.decode() async for k in redis_client.scan_iter(match=f"*{digest}*", count=1000)]
    assert found == [f"{bf_settings.redis_prefix}link:{digest}"]


async def test_sites_are_per_test(tenant: Tenant, other_tenant: Tenant) -> None:
    # Random slugs: a rerun against a kept database never collides with old rows.
    assert tenant.slug != other_tenant.slug
    assert tenant.site_id != other_tenant.site_id
