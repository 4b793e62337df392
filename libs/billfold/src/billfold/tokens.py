"""Secrets Billfold hands out: API keys, link tokens, one-time codes.

Every secret is random (``secrets``), returned once, and stored only as a hash: SHA-256
for high-entropy tokens (a salt adds nothing there), salted SHA-256 for 6-digit codes
(their space is small enough to precompute otherwise).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final, Literal

# Prefixes, not secrets: they make a leaked token recognisable to humans and scanners.
SECRET_KEY_PREFIX: Final = "bf_sk_"  # noqa: S105
PUBLISHABLE_KEY_PREFIX: Final = "bf_pk_"
LINK_TOKEN_PREFIX: Final = "bfl_"  # noqa: S105
BROWSER_SESSION_PREFIX: Final = "bfs_"

TOKEN_BYTES: Final = 32  # 256 bits, well above the 128-bit floor of DESIGN.md

KeyKind = Literal["secret", "publishable"]


def generate(prefix: str, nbytes: int = TOKEN_BYTES) -> str:
    """A new random token: the prefix (for humans and secret scanners) plus base64url."""
    return prefix + secrets.token_urlsafe(nbytes)


def generate_key(kind: KeyKind) -> str:
    return generate(SECRET_KEY_PREFIX if kind == "secret" else PUBLISHABLE_KEY_PREFIX)


def key_kind(key: str) -> KeyKind | None:
    if key.startswith(SECRET_KEY_PREFIX):
        return "secret"
    if key.startswith(PUBLISHABLE_KEY_PREFIX):
        return "publishable"
    return None


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token: what is stored and indexed instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison, so timing never tells how much of a secret matched."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def matches(token: str, stored_hash: str) -> bool:
    return same(hash_token(token), stored_hash)


def hint(token: str) -> str:
    """What may be shown of a token later (prefix and last four), e.g. in ``key list``."""
    prefix = token.split("_", 2)
    head = "_".join(prefix[:2]) + "_" if len(prefix) == 3 else ""
    return f"{head}…{token[-4:]}"


def generate_code(digits: int = 6) -> str:
    return str(secrets.randbelow(10**digits)).zfill(digits)


def new_salt() -> str:
    return secrets.token_hex(16)


def hash_code(code: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def code_matches(code: str, salt: str, stored_hash: str) -> bool:
    return same(hash_code(code, salt), stored_hash)
