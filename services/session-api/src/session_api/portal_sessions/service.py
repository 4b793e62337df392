"""Creating and revoking portal sessions.

Each write commits the session change and its outbox event atomically (create: one
statement; revoke: one transaction); the Redis link index is updated after the commit
(a Redis failure is one warning, not a failed request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import asyncpg
import redis.asyncio as aioredis
import structlog

from billfold import outbox, sealing, tokens
from billfold.events import PortalSessionCreated, PortalSessionData, PortalSessionRevoked
from billfold.http.errors import ApiError, not_found
from billfold.settings import Settings
from session_api.dbtypes import Acquirer, Executor
from session_api.ids import iso, new_id, utcnow
from session_api.keys.repository import KeyOwner
from session_api.portal_sessions import link_index, repository
from session_api.portal_sessions.batcher import CreateBatcher
from session_api.portal_sessions.schemas import (
    DEFAULT_TTL,
    CreatePortalSession,
    resolve_sections,
)


class KeyRevoked(Exception):
    """The API key was revoked after the caller's (cached) lookup; nothing was written."""


@dataclass(frozen=True, slots=True)
class Created:
    body: dict[str, Any]
    token_hash: str
    expires_at: datetime


def link_url(settings: Settings, token: str, domain: str | None = None) -> str:
    """The link: on the site's custom domain when it has one (same scheme as the
    portal's base URL), else on the portal's own host."""
    if domain:
        scheme = settings.portal_base_url.split("://", 1)[0]
        return f"{scheme}://{domain}/r/{token}"
    return f"{settings.portal_base_url}/r/{token}"


def customer_ref(params: CreatePortalSession) -> tuple[str, str, bool]:
    """(param name, value, is external id) of the one customer parameter given."""
    if params.customer is not None and params.customer_external_id is not None:
        raise ApiError(
            400,
            "invalid_request_error",
            "parameter_invalid",
            "Pass either customer or customer_external_id, not both.",
            "customer_external_id",
        )
    if params.customer is not None:
        return "customer", params.customer, False
    if params.customer_external_id is not None:
        return "customer_external_id", params.customer_external_id, True
    raise ApiError(
        400,
        "invalid_request_error",
        "parameter_missing",
        "Missing required param: customer (or customer_external_id).",
        "customer",
    )


@dataclass(frozen=True, slots=True)
class Draft:
    """A session about to be written: the row and event, and what the answer needs."""

    new: repository.NewSession
    param: str  # the customer parameter the caller used (for a "No such customer")
    token: str = field(repr=False)
    url: str = field(default="", repr=False)  # the link; "" when prepared without settings


def email_unavailable() -> ApiError:
    return ApiError(
        400,
        "invalid_request_error",
        "email_unavailable",
        "Emailing links is not configured on this server; create the session without "
        "send_email and deliver the url yourself.",
        "send_email",
    )


def prepare(
    owner: KeyOwner,
    params: CreatePortalSession,
    request_id: str | None,
    *,
    settings: Settings | None = None,
) -> Draft:
    """Everything about a new session that needs no database: ids, token, expiry,
    resolved sections, and its ``portal_session.created`` event.

    With ``send_email`` the event carries the link sealed to the notifier's public key
    (the only readable copy goes back in the response); without that key the request
    is refused rather than the email silently lost."""
    public_key = settings.notifier_public_key if settings is not None else None
    if params.send_email and public_key is None:
        raise email_unavailable()
    param, ident, external = customer_ref(params)
    now = utcnow()
    ttl = params.ttl_seconds or owner.site_default_ttl or DEFAULT_TTL
    expires_at = now + timedelta(seconds=ttl)
    session_id = new_id("ps")
    token = tokens.generate(tokens.LINK_TOKEN_PREFIX)
    sealed_link = None
    if params.send_email and settings is not None and public_key is not None:
        sealed_link = sealing.seal(public_key, link_url(settings, token, owner.site_domain))
    sections = resolve_sections(owner.site_default_sections, params.sections)
    flow = params.flow.model_dump() if params.flow is not None else None
    # Validated construction on purpose: pydantic-core's validation (~5 µs here) is
    # faster than the pure-Python model_construct (~18 µs: it inspects the signature
    # of every default factory on each call).
    event = PortalSessionCreated(
        site_id=owner.site_id,
        request_id=request_id,
        data=PortalSessionData(
            session_id=session_id,
            customer_id="",  # filled in by the statement, from the customer it finds
            expires_at=expires_at,
            single_use=params.single_use,
            send_email=params.send_email,
            locale=params.locale,
            return_url=params.return_url,
            sealed_link=sealed_link,
        ),
    )
    new = repository.NewSession(
        key_id=owner.key_id,
        session_id=session_id,
        site_id=owner.site_id,
        customer=ident,
        by_external_id=external,
        token_hash=tokens.hash_token(token),
        single_use=params.single_use,
        sections=sections,
        flow=flow,
        return_url=params.return_url,
        locale=params.locale,
        send_email=params.send_email,
        created_at=now,
        expires_at=expires_at,
        event=event,
    )
    url = link_url(settings, token, owner.site_domain) if settings is not None else ""
    return Draft(new=new, param=param, token=token, url=url)


def finish(settings: Settings, draft: Draft, key_live: bool, customer_id: str | None) -> Created:
    """The answer once the create statement ran: raises ``KeyRevoked`` (nothing was
    written) or a 400 for an unknown customer, else the 201 body."""
    if not key_live:
        raise KeyRevoked
    new = draft.new
    if customer_id is None:
        # Same answer for another site's customer: existence is not confirmed (400, as
        # Stripe does for a missing object named in the parameters).
        raise ApiError(
            400,
            "invalid_request_error",
            "resource_missing",
            f"No such customer: '{new.customer}'",
            draft.param,
        )
    # One log line per request: the access log line carries these ids.
    structlog.contextvars.bind_contextvars(session_id=new.session_id, customer=customer_id)
    token = draft.token
    body = {
        "id": new.session_id,
        "object": "portal_session",
        "token": token,
        "url": draft.url or link_url(settings, token),
        "customer": customer_id,
        "status": "active",
        "single_use": new.single_use,
        "sections": new.sections,
        "flow": new.flow,
        "return_url": new.return_url,
        "locale": new.locale,
        "send_email": new.send_email,
        "expires_at": iso(new.expires_at),
        "created_at": iso(new.created_at),
        "used_at": None,
        "used_ip": None,
        "used_user_agent": None,
        "revoked_at": None,
    }
    return Created(body=body, token_hash=new.token_hash, expires_at=new.expires_at)


async def create(
    conn: Executor,
    settings: Settings,
    owner: KeyOwner,
    params: CreatePortalSession,
    request_id: str | None,
) -> Created:
    """Create a session and its event in one statement on ``conn`` (the caller's
    transaction, if it has one: the idempotent path)."""
    draft = prepare(owner, params, request_id, settings=settings)
    key_live, customer_id = await repository.create_with_event(conn, draft.new)
    return finish(settings, draft, key_live, customer_id)


async def create_batched(
    batcher: CreateBatcher,
    settings: Settings,
    owner: KeyOwner,
    params: CreatePortalSession,
    request_id: str | None,
) -> Created:
    """``create`` through the group commit: the statement is shared with concurrent
    creates, the outcome is this request's own."""
    draft = prepare(owner, params, request_id, settings=settings)
    key_live, customer_id = await batcher.create(draft.new)
    return finish(settings, draft, key_live, customer_id)


async def index(
    writer: link_index.Writer, settings: Settings, site_id: str, created: Created
) -> None:
    """After commit: make the link resolvable from Redis (best effort)."""
    await link_index.put(
        writer,
        settings,
        token_hash=created.token_hash,
        session_id=created.body["id"],
        customer_id=created.body["customer"],
        site_id=site_id,
        expires_at=created.expires_at,
        single_use=created.body["single_use"],
        now=utcnow(),
    )


async def revoke(
    pool: Acquirer,
    client: aioredis.Redis,
    settings: Settings,
    site_id: str,
    session_id: str,
    request_id: str | None,
) -> None:
    """Revoke a session (idempotent: revoking a revoked session is a no-op)."""
    structlog.contextvars.bind_contextvars(session_id=session_id)
    async with pool.acquire() as conn, conn.transaction():
        row = await repository.revoke(conn, site_id, session_id)
        if row is None:
            if await repository.get(conn, site_id, session_id) is None:
                raise not_found("portal session", session_id, "id")
            return
        event = PortalSessionRevoked(
            site_id=site_id,
            request_id=request_id,
            data=PortalSessionData(
                session_id=session_id,
                customer_id=row["customer_id"],
                expires_at=row["expires_at"],
                single_use=row["single_use"],
                at=row["revoked_at"],
            ),
        )
        await outbox.enqueue(
            cast(asyncpg.Connection, conn), repository.SCHEMA, event, ordering_key=session_id
        )
    # portal-web ends browser sessions made from this link: it checks revoked_at and
    # consumes portal_session.revoked; dropping the index stops new exchanges at once.
    await link_index.delete(client, settings, token_hash=row["token_hash"], session_id=session_id)
