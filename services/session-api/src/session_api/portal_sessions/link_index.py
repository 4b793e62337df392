"""The Redis link index: token hash → what portal-web needs to accept a link.

Key ``{prefix}link:{token_hash}``, value JSON ``{session_id, customer_id, site_id,
expires_at, single_use}``, expiring with the session. Redis is only a cache (DESIGN,
principle 1): portal-web falls back to Postgres on a miss, so a failed write here is
one warning, never a failed request.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from billfold import cache
from billfold.logs import get_logger
from billfold.settings import Settings
from session_api.ids import iso

log = get_logger("session_api.link_index")

_FAILURES = (RedisError, OSError, TimeoutError)


def key(settings: Settings, token_hash: str) -> str:
    return cache.key(settings, "link", token_hash)


# SET key value EX ttl for every key of the batch, in one command: redis-py's cost is
# per command (packing, parsing the reply), about four times less per key this way than
# with a pipeline of SETs. redis-py's Script sends EVALSHA and loads the script again if
# the server lost it (restart, SCRIPT FLUSH).
_SET_ALL = """
for i, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[2 * i - 1], 'EX', ARGV[2 * i])
end
return #KEYS
"""


class Writer:
    """Group commit for index writes: concurrent requests share one round trip.

    Each caller still waits until its own entry is written (or failed), so a 201 never
    precedes the index entry; under load the per-write cost of redis-py, which dominates
    a lone ``SET``, is paid once per batch instead of once per request.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._set_all = client.register_script(_SET_ALL)
        self._pending: list[tuple[str, str, int, asyncio.Future[BaseException | None]]] = []
        self._task: asyncio.Task[None] | None = None

    async def set(self, key: str, value: str, ttl: int) -> BaseException | None:
        """Write ``key``; returns None on success, else the error (never raises it)."""
        future: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._pending.append((key, value, ttl, future))
        if self._task is None:
            self._task = asyncio.create_task(self._flush(), name="link-index-writer")
        return await future

    async def _flush(self) -> None:
        batch: list[tuple[str, str, int, asyncio.Future[BaseException | None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                error: BaseException | None = None
                keys: list[str] = []
                args: list[str | int] = []
                for key_, value, ttl, _ in batch:
                    keys.append(key_)
                    args.append(value)
                    args.append(ttl)
                try:
                    await self._set_all(keys=keys, args=args)
                except Exception as exc:  # a cache: any failure is the caller's warning
                    error = exc
                _settle(batch, error)
        except BaseException as exc:  # cancelled (shutdown): never leave a caller hanging
            _settle(batch + self._pending, exc)
            self._pending = []
            raise
        finally:
            self._task = None


def _settle(
    batch: list[tuple[str, str, int, asyncio.Future[BaseException | None]]],
    error: BaseException | None,
) -> None:
    for *_, future in batch:
        if not future.done():
            future.set_result(error)


async def put(
    writer: Writer,
    settings: Settings,
    *,
    token_hash: str,
    session_id: str,
    customer_id: str,
    site_id: str,
    expires_at: datetime,
    single_use: bool,
    now: datetime,
) -> bool:
    ttl = math.ceil((expires_at - now).total_seconds())
    if ttl <= 0:
        return True
    value = json.dumps(
        {
            "session_id": session_id,
            "customer_id": customer_id,
            "site_id": site_id,
            "expires_at": iso(expires_at),
            "single_use": single_use,
        },
        separators=(",", ":"),
    )
    error = await writer.set(key(settings, token_hash), value, ttl)
    if error is not None:
        log.warning("link_index_write_failed", session_id=session_id, error=type(error).__name__)
        return False
    return True


async def delete(
    client: aioredis.Redis, settings: Settings, *, token_hash: str, session_id: str
) -> bool:
    try:
        await client.delete(key(settings, token_hash))
    except _FAILURES as exc:
        # portal-web re-checks revoked_at in Postgres before honouring an index hit.
        log.warning("link_index_delete_failed", session_id=session_id, error=type(exc).__name__)
        return False
    return True
