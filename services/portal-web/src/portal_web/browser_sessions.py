"""Browser sessions: what a used link turns into, checked on every request.

A browser session is a ``bfs_`` token held by the browser (see ``credentials``), stored
as its SHA-256 in ``web.browser_sessions`` and bound to one portal session: it expires
with it and dies with its revocation.

A multi-use link's own ``bfl_`` token may also stand in for a browser session, as a
Bearer on the JSON API (``validate_link``): the same checks, on the link itself.

Every request checks it. The fast path is ONE Redis round trip (a small script): the
cached entry for the token AND the existence of session-api's link index key for the
portal session. session-api deletes that key when it revokes (after the commit, before
its 204), so a revoke refuses the next request at once, with RabbitMQ playing no part.
Anything else (no entry, no link key, Redis down, slow or flushed) falls back to
Postgres, the truth: ``portal.portal_sessions.revoked_at`` and ``expires_at`` joined to
the browser session. A cache entry lives ``CACHE_SECONDS`` at most, which bounds the
one stale case (session-api could not delete the link key while portal-web could still
read Redis) to that long.
"""

from __future__ import annotations

import enum
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from billfold import cache, tokens
from billfold.logs import get_logger
from billfold.settings import Settings
from portal_web.dbtypes import Conn, Executor

log = get_logger("portal_web.browser_sessions")

CACHE_SECONDS = 15
# After a Redis failure, go straight to Postgres for this long: a Redis that hangs
# would otherwise cost every request the client's timeout (0.5 s) instead of one.
REDIS_BACKOFF_SECONDS = 1.0
_REDIS_FAILURES = (RedisError, OSError, TimeoutError)
# Decoded cache entries (``Validator._decoded``, about 1 KB each) and cache keys kept.
PRINCIPAL_MEMO_SIZE = 4096


def cache_key(settings: Settings, token_hash: str) -> str:
    return cache.key(settings, "web", "bs", token_hash)


def link_cache_key(settings: Settings, link_hash: str) -> str:
    """Our cache entry for a multi-use link used as a Bearer (``validate_link``)."""
    return cache.key(settings, "web", "lb", link_hash)


def link_key(settings: Settings, link_hash: str) -> str:
    """session-api's link index key (``session_api.portal_sessions.link_index.key``):
    present while the link is live, deleted by a revoke."""
    return cache.key(settings, "link", link_hash)


@dataclass(frozen=True, slots=True)
class Created:
    id: str
    token: str


async def create(
    conn: Conn,
    *,
    portal_session_id: str | None,
    site_id: str,
    customer_id: str,
    expires_at: datetime,
    embedded: bool,
    sign_in_id: str | None = None,
    sections: dict[str, dict[str, bool]] | None = None,
) -> Created:
    """A browser session from a link (``portal_session_id``) or from an email sign-in
    (``sign_in_id`` with its own ``sections``)."""
    token = tokens.generate(tokens.BROWSER_SESSION_PREFIX)
    session_id = f"bs_{secrets.token_hex(12)}"
    await conn.execute(
        """
        INSERT INTO web.browser_sessions (id, token_hash, portal_session_id, site_id,
            customer_id, embedded, expires_at, sign_in_id, sections)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        """,
        session_id,
        tokens.hash_token(token),
        portal_session_id,
        site_id,
        customer_id,
        embedded,
        expires_at,
        sign_in_id,
        sections,
    )
    return Created(id=session_id, token=token)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a live browser session and what its portal session allows."""

    id: str
    token: str
    portal_session_id: str | None  # None: opened by email sign-in (``sign_in_id``)
    link_hash: str  # NO_LINK for a sign-in
    site_id: str
    customer_id: str
    embedded: bool
    expires_at: datetime
    sections: dict[str, dict[str, bool]]
    locale: str | None
    return_url: str | None
    # True when the credential is a multi-use link's own token (a Bearer on the JSON
    # API), not a browser session: ``id`` is then the portal session's id.
    via_link: bool = False
    # The deep link the tenant asked for (session-api's ``flow``): {"type":
    # "payment_method_update"} or {"type": "subscription_cancel", "subscription": …}.
    flow: dict[str, Any] | None = None
    sign_in_id: str | None = None
    preview: bool = False  # an operator's read-only preview: every action refused
    # A sign-in whose email had several accounts: the portal offers "Switch account".
    several: bool = False

    def cache_value(self) -> bytes:
        return orjson.dumps(
            {
                "id": self.id,
                "ps": self.portal_session_id,
                "lh": self.link_hash,
                "site": self.site_id,
                "cu": self.customer_id,
                "emb": self.embedded,
                "exp": self.expires_at.timestamp(),
                "sec": self.sections,
                "loc": self.locale,
                "ret": self.return_url,
                "vl": self.via_link,
                "flow": self.flow,
                "si": self.sign_in_id,
                "pv": self.preview,
                "sv": self.several,
            }
        )

    @classmethod
    def from_cache(cls, token: str, raw: bytes) -> Principal:
        v: dict[str, Any] = orjson.loads(raw)
        return cls(
            id=v["id"],
            token=token,
            portal_session_id=v["ps"],
            link_hash=v["lh"],
            site_id=v["site"],
            customer_id=v["cu"],
            embedded=v["emb"],
            expires_at=datetime.fromtimestamp(v["exp"], UTC),
            sections=v["sec"],
            locale=v["loc"],
            return_url=v["ret"],
            via_link=v.get("vl", False),
            flow=v.get("flow"),
            sign_in_id=v.get("si"),
            preview=v.get("pv", False),
            several=v.get("sv", False),
        )


class Refusal(enum.Enum):
    """Why a browser session is refused; the page says which in plain words."""

    UNKNOWN = "unknown"  # never existed, or signed out
    EXPIRED = "expired"
    REVOKED = "revoked"
    SINGLE_USE = "single_use"  # a single-use link's token offered as a Bearer


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Refusal
    site_id: str | None = None
    return_url: str | None = None


# KEYS[1]: the browser session's cache entry; ARGV[1]: the link index key prefix. The
# entry starts with the 64-hex link hash, so the script needs no JSON decoding. Returns
# the entry only if the link key exists too.
_CHECK = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local lh = string.sub(v, 1, 64)
if lh ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. lh) == 0 then return false end
return string.sub(v, 65)
"""
# A sign-in's browser session has no link: its cache entry starts with this instead of
# a link hash (never a hex digest), and only sign-out (which forgets the entry) ends it.
NO_LINK = "-" * 64

# A link's browser session takes expiry, revocation and sections from its portal
# session; a sign-in's from itself (and ends with its sign-in).
_FALLBACK = f"""
SELECT bs.id, bs.portal_session_id, bs.site_id, bs.customer_id, bs.embedded,
       COALESCE(bs.ended_at, si.ended_at) AS ended_at,
       COALESCE(ps.token_hash, '{NO_LINK}') AS link_hash,
       COALESCE(ps.expires_at, bs.expires_at) AS expires_at, ps.revoked_at,
       COALESCE(ps.sections, bs.sections) AS sections, ps.locale, ps.return_url,
       ps.flow, bs.sign_in_id, COALESCE(ps.preview, false) AS preview,
       COALESCE(si.several, false) AS several
FROM web.browser_sessions bs
LEFT JOIN portal.portal_sessions ps
    ON ps.id = bs.portal_session_id AND ps.site_id = bs.site_id
LEFT JOIN web.sign_ins si ON si.id = bs.sign_in_id
WHERE bs.token_hash = $1 AND (ps.id IS NOT NULL OR si.id IS NOT NULL)
"""  # noqa: S608 - a constant

# The same columns as _FALLBACK, so one function makes a Principal of either.
_LINK_FALLBACK = """
SELECT id, id AS portal_session_id, site_id, customer_id, false AS embedded, single_use,
       token_hash AS link_hash, expires_at, revoked_at, sections, locale, return_url, flow,
       NULL::text AS sign_in_id, preview, false AS several
FROM portal.portal_sessions
WHERE token_hash = $1
"""


class Validator:
    """Checks a ``bfs_`` token on each request (see the module docstring)."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, db: Executor) -> None:
        self._settings = settings
        self._redis = redis
        self._db = db
        self._check = redis.register_script(_CHECK)
        self._link_prefix = link_key(settings, "")
        self._redis_down_until = 0.0
        self._principals: dict[tuple[str, bytes], Principal] = {}
        self._cache_keys: dict[str, str] = {}
        self.fallbacks = 0  # Postgres lookups, for tests and curiosity
        self.redis_skipped = 0  # requests that did not even try Redis (backing off)

    async def validate(self, token: str, now: datetime) -> Principal | Refused:
        if not token.startswith(tokens.BROWSER_SESSION_PREFIX) or len(token) > 128:
            return Refused(Refusal.UNKNOWN)
        # The token's cache key (a SHA-256 and a format), worked out once per token.
        key = self._cache_keys.get(token)
        if key is None:
            key = cache_key(self._settings, tokens.hash_token(token))
            if len(self._cache_keys) >= PRINCIPAL_MEMO_SIZE:
                self._cache_keys.clear()
            self._cache_keys[token] = key
        return await self._validate(token, key, now, lambda: self._browser(token))

    async def validate_link(self, token: str, now: datetime) -> Principal | Refused:
        """A multi-use link's ``bfl_`` token as a credential (the JSON API's Bearer),
        checked like a browser session on every request: a revoke or the expiry refuses
        it at once. A single-use link's token never is one: it is spent on entering."""
        if not token.startswith(tokens.LINK_TOKEN_PREFIX) or len(token) > 128:
            return Refused(Refusal.UNKNOWN)
        link_hash = tokens.hash_token(token)
        return await self._validate(
            token, link_cache_key(self._settings, link_hash), now, lambda: self._link(token)
        )

    async def _validate(
        self,
        token: str,
        key: str,
        now: datetime,
        fallback: Callable[[], Awaitable[Principal | Refused]],
    ) -> Principal | Refused:
        raw = None
        redis_ok = time.monotonic() >= self._redis_down_until
        if not redis_ok:
            self.redis_skipped += 1
        else:
            try:
                raw = await self._run_check(key)
            except _REDIS_FAILURES as exc:
                redis_ok = False
                self._redis_down_until = time.monotonic() + REDIS_BACKOFF_SECONDS
                log.debug("browser_session_cache_unavailable", error=type(exc).__name__)
        if raw:
            principal = self._decoded(token, raw)
            if principal.expires_at > now:
                return principal
            return Refused(Refusal.EXPIRED, principal.site_id, principal.return_url)
        self.fallbacks += 1
        result = await fallback()
        if isinstance(result, Refused):
            return result
        if result.expires_at <= now:
            return Refused(Refusal.EXPIRED, result.site_id, result.return_url)
        if redis_ok:
            await self._remember(key, result, now)
        return result

    def _decoded(self, token: str, raw: bytes) -> Principal:
        """``Principal.from_cache(token, raw)``, decoded once per (token, entry): the
        same entry comes back on every request of a session. A Principal is frozen (its
        dicts are never written), so one object can serve every request it fits."""
        key = (token, raw)
        principal = self._principals.get(key)
        if principal is None:
            principal = Principal.from_cache(token, raw)
            if len(self._principals) >= PRINCIPAL_MEMO_SIZE:
                self._principals.clear()
            self._principals[key] = principal
        return principal

    async def _run_check(self, key: str) -> bytes | None:
        """``_CHECK`` by its SHA: one EVALSHA straight through the client (redis-py's
        script object adds wrappers on every call); a Redis that lost the script (a
        restart, SCRIPT FLUSH) gets it loaded again by the script object."""
        try:
            raw: bytes | None = await self._redis.execute_command(  # type: ignore[no-untyped-call]
                "EVALSHA", self._check.sha, 1, key, self._link_prefix, NO_LINK
            )
        except NoScriptError:
            raw = await self._check(keys=[key], args=[self._link_prefix, NO_LINK])
        return raw

    async def _browser(self, token: str) -> Principal | Refused:
        row = await self._db.fetchrow(_FALLBACK, tokens.hash_token(token))
        if row is None or row["ended_at"] is not None:
            return Refused(Refusal.UNKNOWN, row["site_id"] if row is not None else None)
        if row["revoked_at"] is not None:
            return Refused(Refusal.REVOKED, row["site_id"], row["return_url"])
        return _principal(token, row)

    async def _link(self, token: str) -> Principal | Refused:
        row = await self._db.fetchrow(_LINK_FALLBACK, tokens.hash_token(token))
        if row is None:
            return Refused(Refusal.UNKNOWN)
        if row["revoked_at"] is not None:
            return Refused(Refusal.REVOKED, row["site_id"], row["return_url"])
        if row["single_use"]:
            return Refused(Refusal.SINGLE_USE, row["site_id"], row["return_url"])
        return _principal(token, row, via_link=True)

    async def _remember(self, key: str, principal: Principal, now: datetime) -> None:
        ttl = min(CACHE_SECONDS, math.floor((principal.expires_at - now).total_seconds()))
        if ttl <= 0:
            return
        value = principal.link_hash.encode("ascii") + principal.cache_value()
        try:
            await self._redis.set(key, value, ex=ttl)
        except _REDIS_FAILURES as exc:
            log.debug("browser_session_cache_write_failed", error=type(exc).__name__)

    async def forget(self, token: str) -> None:
        try:
            await self._redis.delete(cache_key(self._settings, tokens.hash_token(token)))
        except _REDIS_FAILURES as exc:  # the row's ended_at is the truth; the entry expires
            log.warning("browser_session_cache_delete_failed", error=type(exc).__name__)


def _principal(token: str, row: asyncpg.Record, *, via_link: bool = False) -> Principal:
    return Principal(
        id=row["id"],
        token=token,
        portal_session_id=row["portal_session_id"],
        link_hash=row["link_hash"],
        site_id=row["site_id"],
        customer_id=row["customer_id"],
        embedded=row["embedded"],
        expires_at=row["expires_at"],
        sections=row["sections"],
        locale=row["locale"],
        return_url=row["return_url"],
        via_link=via_link,
        flow=row["flow"] if isinstance(row["flow"], dict) else None,
        sign_in_id=row["sign_in_id"],
        preview=row["preview"],
        several=row["several"],
    )


async def end(db: Executor, principal: Principal) -> None:
    """Sign out: this browser session only (the portal session stays with session-api)."""
    await db.execute(
        "UPDATE web.browser_sessions SET ended_at = now() WHERE id = $1 AND ended_at IS NULL",
        principal.id,
    )
    if principal.sign_in_id is not None:  # and the email's sign-in: no switching after it
        await db.execute(
            "UPDATE web.sign_ins SET ended_at = now() WHERE id = $1 AND ended_at IS NULL",
            principal.sign_in_id,
        )
