"""The code resolver: behind the request, decides whether a login request gets a code.

``login_requests.request`` only writes a row and NOTIFYs ``CHANNEL``. This task (one
per portal-web process; replicas share the rows with ``FOR UPDATE SKIP LOCKED``) claims
unresolved rows and, per row, in one transaction: looks the email up among the site's
live customers (``mirror.customers``, billing-sync's mirror, scoped to the site); if
anyone uses it, draws a 6-digit code, stores its salted hash and enqueues
``login.code_requested`` in portal-web's outbox with the code sealed to the notifier
(billfold.sealing), so the readable code exists only in this process's memory and the
email. Nobody uses the address: the row is marked resolved and nothing is sent.

It wakes on the NOTIFY and polls every ``POLL_SECONDS`` as well (a NOTIFY lost while
the listening connection was down is found by the poll).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime

import asyncpg
from aiohttp import web

from billfold import outbox, sealing, tokens
from billfold.db import DB_POOL
from billfold.events import LoginCodeRequested, LoginCodeRequestedData
from billfold.logs import get_logger
from billfold.settings import Settings
from portal_web.dbtypes import Conn
from portal_web.ids import utcnow
from portal_web.links import SCHEMA
from portal_web.login_requests import CHANNEL

log = get_logger("portal_web.code_resolver")

POLL_SECONDS = 1.0
BATCH = 50

_CLAIM = """
SELECT id, site_id, email, locale, expires_at FROM web.login_requests
WHERE resolved_at IS NULL
ORDER BY created_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""
_COUNT = """
SELECT count(*) FROM mirror.customers
WHERE site_id = $1 AND lower(email) = $2 AND deleted_at IS NULL
"""


class CodeResolver:
    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen: asyncpg.Connection | None = None
        self.resolved = 0  # rows looked at, for tests and curiosity

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="code-resolver")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listen is not None and not self._listen.is_closed():
            with contextlib.suppress(Exception):
                await self._listen.close(timeout=2)

    async def _run(self) -> None:
        failing = False
        while True:
            await self._ensure_listening()
            self._wakeup.clear()
            try:
                done = await self.run_once()
            except Exception as exc:  # Postgres away: the rows wait; try again shortly
                if not failing:
                    log.warning("code_resolver_failed", error=type(exc).__name__)
                failing = True
                done = 0
            else:
                failing = False
            if done >= BATCH:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), POLL_SECONDS)

    async def _ensure_listening(self) -> None:
        if self._listen is not None and not self._listen.is_closed():
            return
        try:
            conn = await asyncpg.connect(self._settings.database_url, timeout=5)
            await conn.add_listener(CHANNEL, self._on_notify)
        except Exception as exc:  # the poll covers for it meanwhile
            log.warning("code_resolver_listen_failed", error=type(exc).__name__)
            return
        self._listen = conn

    def _on_notify(self, *_: object) -> None:
        self._wakeup.set()

    async def run_once(self) -> int:
        """Resolve up to ``BATCH`` pending requests; returns how many."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, BATCH)
            for row in rows:
                await self._resolve(conn, row)
        self.resolved += len(rows)
        return len(rows)

    async def _resolve(self, conn: Conn, row: asyncpg.Record) -> None:
        count = await conn.fetchval(_COUNT, row["site_id"], row["email"])
        public_key = self._settings.notifier_public_key
        expires_at: datetime = row["expires_at"]
        # A backlog older than the code's lifetime: a code nobody could use is not sent.
        send = count > 0 and public_key is not None and expires_at > utcnow()
        if count > 0 and public_key is None:
            log.error("sign_in_code_not_sent", reason="BILLFOLD_NOTIFIER_PUBLIC_KEY unset")
        if not send or public_key is None:
            await conn.execute(
                "UPDATE web.login_requests SET resolved_at = now(), customer_count = $2 "
                "WHERE id = $1",
                row["id"],
                count,
            )
            return
        code = tokens.generate_code()
        salt = tokens.new_salt()
        await conn.execute(
            "UPDATE web.login_requests SET resolved_at = now(), customer_count = $2, "
            "code_salt = $3, code_hash = $4 WHERE id = $1",
            row["id"],
            count,
            salt,
            tokens.hash_code(code, salt),
        )
        event = LoginCodeRequested(
            site_id=row["site_id"],
            data=LoginCodeRequestedData(
                attempt_id=row["id"],
                email=row["email"],
                locale=row["locale"],
                expires_at=expires_at,
                sealed_code=sealing.seal(public_key, code),
            ),
        )
        await outbox.enqueue(conn, SCHEMA, event, ordering_key=row["id"])


CODE_RESOLVER: web.AppKey[CodeResolver] = web.AppKey("code_resolver", CodeResolver)


def resolver_context(
    settings: Settings, enabled: Callable[[web.Application], bool]
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        resolver = CodeResolver(app[DB_POOL], settings)
        app[CODE_RESOLVER] = resolver
        if enabled(app):
            await resolver.start()
        try:
            yield
        finally:
            await resolver.stop()

    return ctx
