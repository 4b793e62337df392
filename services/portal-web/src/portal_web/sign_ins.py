"""Verified sign-ins: the customers an email opens on a site, and the chooser's cookie.

A sign-in is the proof that this browser read a code sent to ``email``. It lists the
email's live customers of the site (never another site's: every query filters on
``site_id``), and every browser session it opens ends with it. When the email has
several customers, the browser keeps the sign-in's ``bfi_`` token in a cookie so the
customer can switch accounts without another code.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from billfold import tokens
from billfold.settings import Settings
from portal_web import credentials
from portal_web.dbtypes import Conn, Executor

SIGN_IN_PREFIX = "bfi_"


@dataclass(frozen=True, slots=True)
class Account:
    customer_id: str
    label: str


@dataclass(frozen=True, slots=True)
class SignIn:
    id: str
    site_id: str
    email: str
    expires_at: datetime


def label(row: Any, fields: tuple[str, ...]) -> str:
    """The chooser's words for one customer: the site's label fields that have a value."""
    parts = [str(row[f]) for f in fields if f in _LABELLED and row[f]]
    return " · ".join(dict.fromkeys(parts)) or str(row["id"])


_LABELLED = ("name", "email", "external_id", "stripe_id")

_ACCOUNTS = """
SELECT id, name, email, external_id, stripe_id FROM mirror.customers
WHERE site_id = $1 AND lower(email) = $2 AND deleted_at IS NULL
ORDER BY created_at, id
"""


async def accounts(
    db: Executor, site_id: str, email: str, fields: tuple[str, ...]
) -> list[Account]:
    rows = await db.fetch(_ACCOUNTS, site_id, email)
    return [Account(r["id"], label(r, fields)) for r in rows]


async def create(
    conn: Conn,
    *,
    login_request_id: str,
    site_id: str,
    email: str,
    ttl: int,
    embedded: bool = False,
    several: bool = False,
) -> tuple[SignIn, str]:
    token = tokens.generate(SIGN_IN_PREFIX)
    sign_in_id = f"si_{secrets.token_hex(12)}"
    expires_at = await conn.fetchval(
        """
        INSERT INTO web.sign_ins
            (id, login_request_id, site_id, email, token_hash, expires_at, embedded, several)
        VALUES ($1, $2, $3, $4, $5, now() + $6::interval, $7, $8)
        RETURNING expires_at
        """,
        sign_in_id,
        login_request_id,
        site_id,
        email,
        tokens.hash_token(token),
        timedelta(seconds=ttl),
        embedded,
        several,
    )
    return SignIn(sign_in_id, site_id, email, expires_at), token


async def by_token(
    db: Executor, site_id: str, token: str | None, *, embedded: bool = False
) -> SignIn | None:
    """The live sign-in of a cookie (or, ``embedded``, of a frame's path), on this site
    only. A token works only the way it was handed out: a framed sign-in's never as a
    cookie, a cookie's never in a frame's path."""
    if token is None or not token.startswith(SIGN_IN_PREFIX) or len(token) > 128:
        return None
    row = await db.fetchrow(
        "SELECT id, site_id, email, expires_at FROM web.sign_ins "
        "WHERE token_hash = $1 AND site_id = $2 AND embedded = $3 "
        "AND ended_at IS NULL AND expires_at > now()",
        tokens.hash_token(token),
        site_id,
        embedded,
    )
    return SignIn(row["id"], row["site_id"], row["email"], row["expires_at"]) if row else None


# --- the chooser's cookie ------------------------------------------------------------


COOKIE = "bf_signin"


def set_cookie(response: web.StreamResponse, settings: Settings, token: str, max_age: int) -> None:
    credentials.set_cookie(response, settings, token, max_age, base=COOKIE)


def cookie_token(request: web.Request, settings: Settings) -> str | None:
    return request.cookies.get(credentials.cookie_name(settings, COOKIE))


async def by_id(db: Executor, site_id: str, sign_in_id: str) -> SignIn | None:
    """A live sign-in by id (a framed portal's: its browser session names it)."""
    row = await db.fetchrow(
        "SELECT id, site_id, email, expires_at FROM web.sign_ins "
        "WHERE id = $1 AND site_id = $2 AND ended_at IS NULL AND expires_at > now()",
        sign_in_id,
        site_id,
    )
    return SignIn(row["id"], row["site_id"], row["email"], row["expires_at"]) if row else None
