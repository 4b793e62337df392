"""billing-sync serves RPC as part of its app: readiness shows it, and answered calls
are purged after their retention."""

from __future__ import annotations

import secrets

import aiohttp

from billfold.rpc import SetAutoPay
from billing_sync.rpc.retention import RPC_CALLS_RETENTION, purge_rpc_calls

from .rpc_harness import RpcEnv, rpc_env_fixture  # noqa: F401 - the fixture


async def test_readiness_includes_the_rpc_server(rpc_env: RpcEnv) -> None:
    async with aiohttp.ClientSession() as http:
        response = await http.get(rpc_env.server.make_url("/readyz"))
        body = await response.json()
    assert response.status == 200
    assert body["checks"]["rpc"] == "ok"


async def test_answered_calls_are_purged_after_their_retention(rpc_env: RpcEnv) -> None:
    env = rpc_env
    cus = await env.customer(subscription={})
    call = SetAutoPay(
        site_id=env.site_id,
        customer_id=cus.id,
        subscription_id=str(cus.subscription),
        auto_pay=False,
    )
    await env.client.call(call)
    old = f"call_{secrets.token_hex(8)}"
    await env.pool.execute(
        "INSERT INTO mirror.rpc_calls (call_id, call_type, site_id, customer_id, "
        "request_hash, reply, created_at) VALUES ($1, 'invoice.pay', $2, $3, '\\x00', "
        "'{}'::jsonb, now() - $4::interval - interval '1 minute')",
        old,
        env.site_id,
        cus.id,
        RPC_CALLS_RETENTION,
    )
    assert await purge_rpc_calls(env.pool) >= 1
    kept = await env.pool.fetch(
        "SELECT call_id FROM mirror.rpc_calls WHERE call_id = ANY($1::text[])",
        [old, call.call_id],
    )
    assert [r["call_id"] for r in kept] == [call.call_id]
