"""Authenticated encryption of a stored idempotent response.

A replayed POST must return the same link token, but tokens are never stored in a
readable form (DESIGN, principle 2). The response is sealed with AES-256-GCM under a
key derived (HKDF-SHA256) from the caller's API key and Idempotency-Key, neither of
which the database holds in clear, so only the client that made the request can have
it replayed. ``cryptography`` provides the primitives: no home-made crypto here.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12  # GCM's standard nonce; random per seal
KEY_BYTES = 32


def derive_key(secret: str, context: str) -> bytes:
    """A 256-bit key bound to both the secret (an API key) and the context."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=context.encode())
    return hkdf.derive(secret.encode())


def seal(key: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, None)


def unseal(key: bytes, sealed: bytes) -> bytes | None:
    """The plaintext, or None if the key is wrong or the data was altered."""
    if len(sealed) < NONCE_BYTES + 16:
        return None
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], None)
    except InvalidTag:
        return None
