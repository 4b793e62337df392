"""Per-site Stripe secrets at rest: AES-256-GCM under ``BILLFOLD_BILLING_SECRETS_KEY``.

A webhook signing secret or an API key has to be used, not just compared, so it cannot
be hashed like Billfold's own keys: it is encrypted. The associated data binds each
ciphertext to its site and column (``site_id`` + ``field``), so a ciphertext copied to
another site's row, or from the webhook column to the API key column, fails to decrypt
instead of being used there. Stored as ``version byte || 12-byte nonce || ciphertext+tag``.
Nothing here logs; callers never log or print the plaintext.
"""

from __future__ import annotations

import os
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"\x01"
_NONCE = 12

Field = Literal["api_key", "webhook_secret"]


class SecretDecryptError(Exception):
    """A stored secret does not decrypt with this key (wrong key, or moved/tampered)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("AES-256 needs a 32-byte key")
        self._aead = AESGCM(key)

    @staticmethod
    def _aad(site_id: str, field: Field) -> bytes:
        # A separator byte that neither part can contain keeps ("ab","c") != ("a","bc").
        return f"billfold.mirror.stripe_accounts\x00{site_id}\x00{field}".encode()

    def seal(self, plaintext: str, *, site_id: str, field: Field) -> bytes:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), self._aad(site_id, field))
        return _VERSION + nonce + sealed

    def open(self, blob: bytes, *, site_id: str, field: Field) -> str:
        if len(blob) < 1 + _NONCE + 16 or blob[:1] != _VERSION:
            raise SecretDecryptError(f"unreadable {field} for site {site_id}")
        nonce, sealed = blob[1 : 1 + _NONCE], blob[1 + _NONCE :]
        try:
            return self._aead.decrypt(nonce, sealed, self._aad(site_id, field)).decode()
        except InvalidTag:
            raise SecretDecryptError(
                f"{field} of site {site_id} does not decrypt with BILLFOLD_BILLING_SECRETS_KEY"
            ) from None
