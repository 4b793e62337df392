"""Rate limits on "email me a sign-in code": per email (per site) and per IP, with the
``limits`` library over Redis.

Fail closed: when Redis cannot be asked, no code is requested and the page says sign-in
is unavailable for a moment (``LimiterUnavailable``). Guessing a code never depends on
Redis anyway: each code allows ``MAX_ATTEMPTS`` tries, counted in Postgres
(``portal_web.login_requests``), and a new code can only come through these limits.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError

from billfold.logs import get_logger
from billfold.settings import ENV_PREFIX, Settings, SettingsError

log = get_logger("portal_web.sign_in_limits")

_FAILURES = (StorageError, RedisError, OSError, TimeoutError)


PER_EMAIL = "5/15 minutes"
PER_IP = "30/15 minutes"


@dataclass(frozen=True, slots=True)
class Policy:
    """How often codes may be asked for (``limits`` notation, e.g. ``5/15 minutes``)."""

    per_email: str = PER_EMAIL
    per_ip: str = PER_IP
    # Tests turn the resolver off to see what the request alone wrote.
    resolver: bool = True

    @classmethod
    def from_environment(cls) -> Policy:
        """``BILLFOLD_SIGN_IN_PER_EMAIL`` / ``BILLFOLD_SIGN_IN_PER_IP`` (e.g. behind a
        NAT that puts a whole office on one address); a bad value stops start-up with
        one line naming the variable."""
        values: dict[str, str] = {}
        for field, default in (("per_email", PER_EMAIL), ("per_ip", PER_IP)):
            name = f"{ENV_PREFIX}SIGN_IN_{field.upper()}"
            value = os.environ.get(name, default)
            try:
                parse(value)
            except ValueError:
                print(
                    f"billfold: invalid setting {name}: expected a rate such as "
                    f"'{default}', got {value!r}",
                    file=sys.stderr,
                )
                raise SettingsError(2) from None
            values[field] = value
        return cls(per_email=values["per_email"], per_ip=values["per_ip"])


class LimiterUnavailable(Exception):
    """Redis could not be asked: refuse rather than let requests through unlimited."""


@dataclass(frozen=True, slots=True)
class Limited:
    retry_after: int  # seconds until a request would be accepted again


class SignInLimiter:
    def __init__(self, settings: Settings, policy: Policy) -> None:
        self._storage = RedisStorage(
            "async+" + settings.redis_url,
            implementation="redispy",
            key_prefix=settings.redis_prefix + "web:rl",
            wrap_exceptions=True,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._per_email = parse(policy.per_email)
        self._per_ip = parse(policy.per_ip)

    async def hit(self, site_id: str, email: str, ip: str | None) -> Limited | None:
        """Count one code request; ``Limited`` if either limit is spent."""
        # Redis keys carry a digest, never the address (no personal data in the cache).
        email_key = hashlib.sha256(f"{site_id}\0{email}".encode()).hexdigest()[:32]
        checks: list[tuple[RateLimitItem, str]] = [
            (self._per_ip, f"ip:{ip or '-'}"),
            (self._per_email, f"email:{email_key}"),
        ]
        try:
            for item, ident in checks:
                if not await self._limiter.hit(item, "signin", ident):
                    stats = await self._limiter.get_window_stats(item, "signin", ident)
                    return Limited(retry_after=max(1, int(stats.reset_time - time.time())))
        except _FAILURES as exc:
            log.warning("sign_in_limiter_unavailable", error=type(exc).__name__)
            raise LimiterUnavailable from None
        return None


SIGN_IN_POLICY: web.AppKey[Policy] = web.AppKey("sign_in_policy", Policy)
SIGN_IN_LIMITER: web.AppKey[SignInLimiter] = web.AppKey("sign_in_limiter", SignInLimiter)


def limiter_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[SIGN_IN_LIMITER] = SignInLimiter(settings, app[SIGN_IN_POLICY])
        yield

    return ctx
