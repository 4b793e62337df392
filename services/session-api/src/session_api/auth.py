"""API key authentication: ``Authorization: Bearer``, HTTP Basic user, or ``X-API-Key``.

The key is hashed and looked up through a unique index, so no secret is ever compared
byte by byte (the hash comparison inside Postgres leaks nothing useful about the key).
Revoking a key (``billfold key revoke``, from another process) takes effect on the very
next request. Reads always look the key up. Session creation, the hot path, may take the
key's owner from a short in-process cache (``OwnerCache``) because its single SQL
statement re-checks that the key is still live before writing anything.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from dataclasses import dataclass, field

import structlog
from aiohttp import web

from billfold import tokens
from billfold.http.errors import ApiError, unauthorized
from billfold.ttl_cache import MISS, TtlCache
from session_api.dbtypes import Executor
from session_api.keys.repository import KeyOwner, owner_by_hash

# Scopes a secret key may be limited to (``billfold key create --scope``); a key
# without scopes has all of them.
SCOPES = ("portal_sessions:write", "portal_sessions:read", "customers:read")


@dataclass(frozen=True, slots=True)
class Authenticated:
    owner: KeyOwner
    # Kept only for deriving the idempotency sealing key; never logged or stored.
    raw_key: str = field(repr=False)
    key_hash: str = field(repr=False)
    # True when the owner came from OwnerCache: not yet checked against revocation.
    cached: bool = False

    @property
    def site_id(self) -> str:
        return self.owner.site_id


def extract_key(request: web.Request) -> str | None:
    key = _raw_key(request)
    # Keys are base64url ASCII; anything else (say, undecodable header bytes) is no key
    # of ours, and must not reach the hashing below.
    if key is not None and not (key.isascii() and key.isprintable()):
        raise unauthorized("Invalid API key provided.")
    return key


def _raw_key(request: web.Request) -> str | None:
    # One credential, sent once: with two Authorization (or X-API-Key) headers, or both
    # headers, which one counts would depend on who reads them (this service takes the
    # first, a proxy may take the last), so refuse rather than pick.
    authorization = request.headers.getall("Authorization", [])
    api_keys = [v for v in request.headers.getall("X-API-Key", []) if v.strip()]
    if (
        len(authorization) > 1
        or len(api_keys) > 1
        or (any(v.strip() for v in authorization) and api_keys)
    ):
        raise unauthorized(
            "Send exactly one API key: one Authorization header or one X-API-Key header."
        )
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer":
            return value or None
        if scheme.lower() == "basic":
            try:
                decoded = b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise unauthorized("Malformed HTTP Basic credentials.") from None
            user, _, _password = decoded.partition(":")
            return user or None
        raise unauthorized("Unsupported Authorization scheme: use Bearer or Basic.")
    api_key = request.headers.get("X-API-Key", "").strip()
    return api_key or None


class OwnerCache:
    """key hash → its owner (site, scopes, site defaults) for ``ttl`` seconds.

    Only for callers whose write re-checks ``revoked_at`` in the same statement: the
    cache spares the lookup round trip, never the revocation check. What it can serve
    stale is a site's defaults (sections, TTL), for at most ``ttl`` seconds.
    """

    def __init__(self, ttl: float = 30.0, max_size: int = 10_000) -> None:
        self._entries: TtlCache[str, KeyOwner] = TtlCache(ttl, max_size)

    def get(self, key_hash: str) -> KeyOwner | None:
        owner = self._entries.get(key_hash)
        return None if owner is MISS else owner

    def put(self, key_hash: str, owner: KeyOwner) -> None:
        self._entries.put(key_hash, owner)

    def drop(self, key_hash: str) -> None:
        self._entries.drop(key_hash)


OWNER_CACHE: web.AppKey[OwnerCache] = web.AppKey("owner_cache", OwnerCache)


async def authenticate(
    request: web.Request, conn: Executor, scope: str, *, cache: OwnerCache | None = None
) -> Authenticated:
    """The caller's key and site, or a 401/403. With ``cache``, the owner may come from
    it: the caller MUST then re-check that ``owner.key_id`` is live when it writes."""
    key = extract_key(request)
    if key is None:
        raise unauthorized(
            "No API key provided. Send your secret key as 'Authorization: Bearer <key>', "
            "as the HTTP Basic user name, or in the X-API-Key header."
        )
    kind = tokens.key_kind(key)
    if kind == "publishable":
        raise unauthorized("Publishable keys cannot call this endpoint; use a secret key.")
    if kind is None:
        raise unauthorized("Invalid API key provided.")
    key_hash = tokens.hash_token(key)
    owner = cache.get(key_hash) if cache is not None else None
    cached = owner is not None
    if owner is None:
        owner = await owner_by_hash(conn, key_hash)
        if owner is None or owner.kind != "secret":
            raise unauthorized("Invalid API key provided.")
        if owner.revoked:
            raise unauthorized("This API key has been revoked.")
        if cache is not None:
            cache.put(key_hash, owner)
    structlog.contextvars.bind_contextvars(site=owner.site_id, key_id=owner.key_id)
    if owner.scopes is not None and scope not in owner.scopes:
        raise ApiError(
            403,
            "permission_error",
            "insufficient_scope",
            f"This API key does not have the '{scope}' scope.",
        )
    return Authenticated(owner=owner, raw_key=key, key_hash=key_hash, cached=cached)


async def ensure_live(conn: Executor, auth: Authenticated, cache: OwnerCache) -> None:
    """For answers given without the create statement's check (a validation error, an
    idempotent replay): a cached key must still be live, or the answer is a 401."""
    if not auth.cached:
        return
    owner = await owner_by_hash(conn, auth.key_hash)
    if owner is None or owner.revoked:
        cache.drop(auth.key_hash)
        raise revoked_meanwhile()


def revoked_meanwhile() -> ApiError:
    return unauthorized("This API key has been revoked.")
