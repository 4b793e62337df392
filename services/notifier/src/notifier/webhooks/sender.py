"""POSTing an event to a tenant endpoint, signed, within the timeout; every attempt
goes to the endpoint's delivery log."""

from __future__ import annotations

import time

import aiohttp
import asyncpg
import orjson

from notifier.deliveries import Delivery
from notifier.failures import permanent, transient
from notifier.settings import NotifierSettings
from notifier.webhooks import endpoints, guard, signing

USER_AGENT = "Billfold-Webhooks/1"


class WebhookSender:
    def __init__(self, pool: asyncpg.Pool, settings: NotifierSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.allow_private = settings.webhook_allow_private
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=100, **guard.connector_kwargs(self.allow_private)
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout),
                trust_env=False,  # no proxy from the environment can route around the guard
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, delivery: Delivery) -> None:
        try:
            found = await endpoints.for_delivery(
                self.pool, self.settings.data_key_bytes(), delivery.endpoint_id
            )
        except endpoints.SecretUnreadable:
            raise permanent("the endpoint's secret does not open with this data key") from None
        if found is None:
            raise permanent("endpoint removed")
        endpoint, secret = found
        body = orjson.dumps(delivery.payload)
        headers = {
            "Content-Type": "application/json",
            signing.HEADER: signing.header(secret, body),
            "Billfold-Delivery-Id": delivery.id,
            "Billfold-Event-Type": delivery.event_type,
        }
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            guard.check_literal(endpoint.url, allow_private=self.allow_private)
            async with self._client().post(
                endpoint.url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                await resp.read()
        except guard.UnsafeUrl as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"no answer within {self.settings.webhook_timeout:g} s"
        except aiohttp.ClientError as exc:
            cause = exc.__cause__ or getattr(exc, "os_error", None)
            if isinstance(cause, guard.Refused):
                error = f"refused: {cause}"
            else:
                error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            elapsed = int((time.monotonic() - started) * 1000)
        await endpoints.log_attempt(self.pool, delivery.id, endpoint.id, status, error, elapsed)
        if status is not None and 200 <= status < 300:
            return
        # Tenants' 4xx are retried too: a misconfigured receiver gets fixed within days.
        raise transient(error or f"HTTP {status}")
