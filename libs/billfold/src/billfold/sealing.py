"""Sealing a secret to the notifier: the one place producers and the notifier share.

A link token or sign-in code that must reach the notifier travels sealed to the
notifier's public key (a libsodium sealed box: X25519 + XSalsa20-Poly1305 with an
ephemeral sender key), so Postgres, the outbox, RabbitMQ and dead-letter queues only
ever hold ciphertext. Producers hold the public key alone; only the notifier, holding
the private key, can open it. Keys and sealed blobs are URL-safe base64 text, so they
fit environment variables and JSON events.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

KEY_BYTES = 32


class SealingError(ValueError):
    """A key is malformed or a sealed blob cannot be opened with this key."""


@dataclass(frozen=True)
class KeyPair:
    public: str
    private: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise SealingError(f"{what} is not URL-safe base64") from None


def _key(text: str, what: str) -> bytes:
    raw = _unb64(text.strip(), what)
    if len(raw) != KEY_BYTES:
        raise SealingError(f"{what} must be {KEY_BYTES} bytes, got {len(raw)}")
    return raw


def generate_keypair() -> KeyPair:
    key = PrivateKey.generate()
    return KeyPair(public=_b64(bytes(key.public_key)), private=_b64(bytes(key)))


def check_public_key(public_key: str) -> str:
    """Return the key if it is a well-formed public key, else raise ``SealingError``."""
    _key(public_key, "public key")
    return public_key.strip()


def check_private_key(private_key: str) -> str:
    _key(private_key, "private key")
    return private_key.strip()


def public_key_of(private_key: str) -> str:
    return _b64(bytes(PrivateKey(_key(private_key, "private key")).public_key))


def seal(public_key: str, secret: str) -> str:
    """Seal ``secret`` so only the holder of the matching private key can read it."""
    box = SealedBox(PublicKey(_key(public_key, "public key")))
    return _b64(box.encrypt(secret.encode("utf-8")))


def open_sealed(private_key: str, sealed: str) -> str:
    """Open a blob from :func:`seal`; raise ``SealingError`` if it was sealed to
    another key, altered, or is not a sealed blob at all."""
    box = SealedBox(PrivateKey(_key(private_key, "private key")))
    try:
        return box.decrypt(_unb64(sealed, "sealed secret")).decode("utf-8")
    except (CryptoError, UnicodeDecodeError):
        raise SealingError("sealed secret cannot be opened with this key") from None
