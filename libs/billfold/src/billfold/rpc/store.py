"""The serving service's record of answered calls: a retried call gets the stored reply.

One table per serving service, in its own schema (``{schema}.rpc_calls``), created by
that service's migration through :func:`rpc_calls_ddl` (a yoyo Python migration:
``steps = [step(rpc_calls_ddl("mirror"))]``).

The server claims a call's id with ``INSERT … ON CONFLICT DO NOTHING`` in the
transaction that runs the handler and stores the reply, so the handler's writes, the
mirror update and the stored reply commit together. A concurrent copy of the same call
(a retry while the first attempt still runs on another replica) waits on the claimed
row and then reads the committed reply; if the first attempt rolled back, the copy
claims the id and runs. The stored call's site, customer, type and content hash must
match the retry's: a reused id never hands one customer another's reply.
"""

# The schema in these f-strings is checked by sql_identifier, never input.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
from datetime import timedelta

import asyncpg

from billfold.bus import sql_identifier
from billfold.rpc.calls import Call
from billfold.rpc.replies import (
    RpcInvalidRequest,
    RpcReply,
    RpcUnavailable,
    dump_reply,
    parse_reply,
)


def rpc_calls_ddl(schema: str) -> str:
    """The ``rpc_calls`` table in ``schema`` (which must exist); idempotent."""
    s = sql_identifier(schema)
    return f"""
CREATE TABLE IF NOT EXISTS {s}.rpc_calls (
    call_id      text PRIMARY KEY,
    call_type    text NOT NULL,
    site_id      text NOT NULL,
    customer_id  text NOT NULL,
    request_hash bytea NOT NULL,           -- SHA-256 of the call's JSON
    reply        jsonb,                    -- NULL only inside the claiming transaction
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS rpc_calls_created_at_idx ON {s}.rpc_calls (created_at);
"""


def request_hash(call: Call) -> bytes:
    return hashlib.sha256(call.model_dump_json().encode("utf-8")).digest()


class RpcCallStore:
    """Claims, answers and purges rows of ``{schema}.rpc_calls``."""

    def __init__(self, schema: str) -> None:
        table = f"{sql_identifier(schema)}.rpc_calls"
        self._claim = (
            f"INSERT INTO {table} (call_id, call_type, site_id, customer_id, request_hash) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_id) DO NOTHING"
        )
        self._stored = (
            "SELECT call_type, site_id, customer_id, request_hash, reply::text AS reply "
            f"FROM {table} WHERE call_id = $1"
        )
        # Text in and out: the same whether or not the pool has a JSON codec.
        self._answer = f"UPDATE {table} SET reply = $2::text::jsonb WHERE call_id = $1"
        self._purge = f"DELETE FROM {table} WHERE created_at < now() - $1::interval"

    async def claim(self, conn: asyncpg.Connection, call: Call) -> RpcReply | None:
        """Claim ``call`` in ``conn``'s transaction: None if it is new (run it, then
        :meth:`answer`), else the reply stored for it.

        Raises ``RpcInvalidRequest`` if the id was used for a different call.
        """
        digest = request_hash(call)
        status = await conn.execute(
            self._claim, call.call_id, call.type, call.site_id, call.customer_id, digest
        )
        if status.endswith(" 1"):
            return None
        row = await conn.fetchrow(self._stored, call.call_id)
        if row is None:  # purged between the two statements (a purge window too short)
            raise RpcUnavailable(code="call_purged")
        same = (row["call_type"], row["site_id"], row["customer_id"], bytes(row["request_hash"]))
        if same != (call.type, call.site_id, call.customer_id, digest):
            raise RpcInvalidRequest(
                "call_id_reused", "This call id was already used for a different call."
            )
        # The claimer committed (we waited on its row), so the reply is there.
        return parse_reply(row["reply"])

    async def answer(self, conn: asyncpg.Connection, call_id: str, reply: RpcReply) -> None:
        """Store the reply of the call claimed in this transaction."""
        await conn.execute(self._answer, call_id, dump_reply(reply).decode("utf-8"))

    async def purge(self, conn: asyncpg.Connection | asyncpg.Pool, older_than: timedelta) -> int:
        """Delete answered calls older than ``older_than``; returns how many.

        Keep at least as long as any caller retries, and 24 h (how long Stripe keeps
        idempotency keys) is a safe floor.
        """
        status = await conn.execute(self._purge, older_than)
        return int(status.rsplit(" ", 1)[1])
