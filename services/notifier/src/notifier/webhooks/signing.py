"""``Billfold-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">``, like Stripe's.

The tenant recomputes the HMAC over the timestamp, a dot and the raw body with the
endpoint's secret, compares in constant time, and rejects old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

HEADER = "Billfold-Signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret (log redaction knows it)
TOLERANCE = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(secret, t, body)}"


def verify(secret: str, body: bytes, value: str, *, now: float | None = None) -> bool:
    """What a tenant does (the README shows the same in a few lines)."""
    parts = dict(item.split("=", 1) for item in value.split(",") if "=" in item)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > TOLERANCE:
        return False
    return hmac.compare_digest(parts.get("v1", ""), signature(secret, t, body))
