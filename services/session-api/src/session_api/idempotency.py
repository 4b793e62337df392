"""``Idempotency-Key`` for POSTs: same key and parameters → the same response for 24 h.

* The claim is an ``INSERT … ON CONFLICT`` on the (site_id, key) primary key, in the
  same transaction as the work. A concurrent request with the same key blocks on that
  row until the first commits, then replays its response: two requests never both
  create. If the first fails, its transaction (claim included) rolls back and the key
  is free again.
* Only successful (2xx) responses are stored. Unlike Stripe, an error is not replayed:
  the usual 4xx here is "unknown customer" while billing-sync is still mirroring it,
  and a client retrying with the same key should succeed once it is there.
* The request hash covers method, path and the *validated* parameters, so a JSON body
  and the equivalent form body are the same request; different parameters → 409.
* Records older than 24 h are ignored (and reclaimed); a sweeper deletes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from billfold.http.errors import ApiError, invalid
from session_api import sealing
from session_api.dbtypes import Conn, Executor

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
WINDOW = "24 hours"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool


def key_header(request: web.Request) -> str | None:
    """The request's ``Idempotency-Key``, checked; None when there is none. Sent twice is
    a 400: which one counts would otherwise depend on who reads the headers."""
    keys = request.headers.getall(HEADER, [])
    if not keys:
        return None
    if len(keys) > 1:
        raise invalid("Send the Idempotency-Key header once.", param=HEADER)
    return check_key(keys[0])


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise invalid(
            f"The Idempotency-Key header must be 1 to {MAX_KEY_LENGTH} printable characters.",
            param=HEADER,
        )
    return key


def request_hash(method: str, path: str, params: dict[str, Any]) -> str:
    canonical = json.dumps([method, path, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def run(
    conn: Conn,
    *,
    site_id: str,
    key: str,
    req_hash: str,
    api_key: str,
    work: Callable[[Conn], Awaitable[tuple[int, dict[str, Any]]]],
) -> Outcome:
    """Run ``work`` once per (site, key) within a transaction, or replay its result."""
    seal_key = sealing.derive_key(api_key, f"billfold-idempotency:{site_id}:{key}")
    async with conn.transaction():
        claimed = await conn.fetchval(
            f"""
            INSERT INTO portal.idempotency_keys (site_id, key, request_hash)
            VALUES ($1, $2, $3)
            ON CONFLICT (site_id, key) DO UPDATE
                SET request_hash = EXCLUDED.request_hash, response_status = NULL,
                    response_body = NULL, created_at = now()
                WHERE portal.idempotency_keys.created_at < now() - interval '{WINDOW}'
            RETURNING true
            """,  # noqa: S608 - constant interval
            site_id,
            key,
            req_hash,
        )
        if claimed:
            status, body = await work(conn)
            sealed = sealing.seal(seal_key, json.dumps(body).encode())
            await conn.execute(
                "UPDATE portal.idempotency_keys SET response_status = $3, response_body = $4 "
                "WHERE site_id = $1 AND key = $2",
                site_id,
                key,
                status,
                sealed,
            )
            return Outcome(status, body, replayed=False)
        row = await conn.fetchrow(
            "SELECT request_hash, response_status, response_body FROM portal.idempotency_keys "
            "WHERE site_id = $1 AND key = $2",
            site_id,
            key,
        )
    assert row is not None  # the conflicting row is committed and younger than 24 h
    if row["request_hash"] != req_hash:
        raise _conflict(
            "Keys for idempotent requests can only be used with the same parameters they "
            "were first used with. Try using a key other than the one used before."
        )
    plaintext = sealing.unseal(seal_key, bytes(row["response_body"] or b""))
    if plaintext is None:
        raise _conflict("This idempotency key was first used with a different API key.")
    return Outcome(row["response_status"], json.loads(plaintext), replayed=True)


def _conflict(message: str) -> ApiError:
    return ApiError(409, "idempotency_error", "idempotency_key_in_use", message, HEADER)


async def sweep(conn: Executor) -> int:
    """Delete records past the 24 h window; returns how many."""
    status = await conn.execute(
        f"DELETE FROM portal.idempotency_keys WHERE created_at < now() - interval '{WINDOW}'"  # noqa: S608
    )
    return int(status.split()[-1])
