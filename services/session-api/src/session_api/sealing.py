"""Authenticated encryption of a stored idempotent response, with only hashlib/hmac.

A replayed POST must return the same link token, but tokens are never stored in a
readable form (DESIGN, principle 2). The response is sealed under a key derived from
the caller's API key and Idempotency-Key, neither of which the database holds in
clear, so only the client that made the request can have it replayed.

Construction: HMAC-SHA256 as a PRF in counter mode for the keystream (fresh random
nonce per seal), then encrypt-then-MAC with a separate HMAC key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

NONCE_BYTES = 16
TAG_BYTES = 32


def derive_key(secret: str, context: str) -> bytes:
    return hmac.new(secret.encode(), context.encode(), hashlib.sha256).digest()


def _subkeys(key: bytes) -> tuple[bytes, bytes]:
    enc = hmac.new(key, b"billfold-seal-enc", hashlib.sha256).digest()
    mac = hmac.new(key, b"billfold-seal-mac", hashlib.sha256).digest()
    return enc, mac


def _xor_stream(enc_key: bytes, nonce: bytes, data: bytes) -> bytes:
    blocks = (len(data) + 31) // 32
    stream = b"".join(
        hmac.new(enc_key, nonce + i.to_bytes(8, "big"), hashlib.sha256).digest()
        for i in range(blocks)
    )[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def seal(key: bytes, plaintext: bytes) -> bytes:
    enc_key, mac_key = _subkeys(key)
    nonce = os.urandom(NONCE_BYTES)
    body = _xor_stream(enc_key, nonce, plaintext)
    tag = hmac.new(mac_key, nonce + body, hashlib.sha256).digest()
    return nonce + body + tag


def unseal(key: bytes, sealed: bytes) -> bytes | None:
    """The plaintext, or None if the key is wrong or the data was altered."""
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        return None
    enc_key, mac_key = _subkeys(key)
    nonce, body, tag = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:-TAG_BYTES], sealed[-TAG_BYTES:]
    expected = hmac.new(mac_key, nonce + body, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        return None
    return _xor_stream(enc_key, nonce, body)
