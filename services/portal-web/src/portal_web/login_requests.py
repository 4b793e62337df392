"""Login requests: "email me a code" and "here is my code".

Asking (``request``) writes one row and a NOTIFY, whatever the email: whether anyone
uses the address is looked up later by ``portal_web.code_resolver``, outside the
request, so the answer and the work in the request are the same for a known and an
unknown email (no account enumeration through content or timing).

Checking (``verify``) runs in one transaction on the row (``FOR UPDATE``): at most
``MAX_ATTEMPTS`` tries per code, counted in Postgres; the code is compared in constant
time against its salted hash. A row without a code (nobody uses the email, or the
resolver has not run yet) fails exactly like a wrong code.
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from billfold import tokens
from portal_web.dbtypes import Conn

CODE_TTL = timedelta(minutes=10)
MAX_ATTEMPTS = 5
CHANNEL = "web_login_requests"

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")
_CODE = re.compile(r"^[0-9]{6}$")


def normalise_email(raw: str) -> str | None:
    """The address as stored and matched (trimmed, lower case), or None if it is not
    one."""
    email = raw.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        return None
    return email


def normalise_code(raw: str) -> str | None:
    """Six digits; spaces and dashes people type between them are dropped."""
    code = re.sub(r"[\s-]", "", raw)[:12]
    return code if _CODE.match(code) else None


def new_request_id() -> str:
    return f"lr_{secrets.token_hex(16)}"


async def request(
    conn: Conn,
    *,
    site_id: str,
    email: str,
    locale: str | None,
    next_section: str | None,
    ip: str | None,
    embedded: bool = False,
) -> str:
    """Record a code request (one INSERT and a NOTIFY, in one transaction).
    ``embedded``: asked inside a frame; its code then works only inside a frame."""
    request_id = new_request_id()
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO web.login_requests
                (id, site_id, email, locale, next_section, ip, expires_at, embedded)
            VALUES ($1, $2, $3, $4, $5, $6, now() + $7::interval, $8)
            """,
            request_id,
            site_id,
            email,
            locale,
            next_section,
            ip,
            CODE_TTL,
            embedded,
        )
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return request_id


class Outcome(enum.Enum):
    OK = "ok"
    WRONG = "wrong"  # try again (attempts_left says how often)
    LOCKED = "locked"  # MAX_ATTEMPTS spent: a new code is needed
    EXPIRED = "expired"  # past its ten minutes: a new code is needed
    UNKNOWN = "unknown"  # no such request on this site, or already used


@dataclass(frozen=True, slots=True)
class Checked:
    outcome: Outcome
    attempts_left: int = 0
    email: str | None = None
    next_section: str | None = None


_LOCK = """
SELECT email, next_section, expires_at, code_salt, code_hash, attempts, verified_at
FROM web.login_requests WHERE id = $1 AND site_id = $2 AND embedded = $3
FOR UPDATE
"""


async def verify(
    conn: Conn,
    *,
    site_id: str,
    request_id: str,
    code: str | None,
    now: datetime,
    embedded: bool = False,
) -> Checked:
    """Check ``code`` for the request; call inside a transaction (the sign-in that
    follows a success commits with it). A request asked for inside a frame is checked
    only inside a frame and the reverse (``embedded``): otherwise it is UNKNOWN, and no
    try is counted."""
    if not request_id.startswith("lr_") or len(request_id) > 64:
        return Checked(Outcome.UNKNOWN)
    row = await conn.fetchrow(_LOCK, request_id, site_id, embedded)
    if row is None or row["verified_at"] is not None:
        return Checked(Outcome.UNKNOWN)
    if row["expires_at"] <= now:
        return Checked(Outcome.EXPIRED)
    if row["attempts"] >= MAX_ATTEMPTS:
        return Checked(Outcome.LOCKED)
    good = (
        code is not None
        and row["code_hash"] is not None
        and tokens.code_matches(code, row["code_salt"], row["code_hash"])
    )
    if good:
        await conn.execute(
            "UPDATE web.login_requests SET verified_at = now(), attempts = attempts + 1 "
            "WHERE id = $1",
            request_id,
        )
        return Checked(Outcome.OK, email=row["email"], next_section=row["next_section"])
    attempts = await conn.fetchval(
        "UPDATE web.login_requests SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts",
        request_id,
    )
    if attempts >= MAX_ATTEMPTS:
        return Checked(Outcome.LOCKED)
    return Checked(Outcome.WRONG, attempts_left=MAX_ATTEMPTS - attempts)
