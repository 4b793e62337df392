"""How long answered RPC calls are kept, and the purge the reconciler's loop runs."""

from __future__ import annotations

from datetime import timedelta

import asyncpg

from billfold.rpc import RpcCallStore
from billing_sync.rpc import SCHEMA

#: A retried call must still find its reply: callers retry for seconds, and Stripe keeps
#: idempotency keys for 24 h; twice that is a safe floor.
RPC_CALLS_RETENTION = timedelta(hours=48)

_STORE = RpcCallStore(SCHEMA)


async def purge_rpc_calls(pool: asyncpg.Pool) -> int:
    """Delete answered calls older than :data:`RPC_CALLS_RETENTION`; returns how many."""
    return await _STORE.purge(pool, RPC_CALLS_RETENTION)
