"""Sealing secrets to the notifier: only the private key's holder can open them."""

from __future__ import annotations

import pytest

from billfold import sealing
from billfold.settings import Settings


def test_seal_opens_only_with_the_matching_private_key() -> None:
    pair = sealing.generate_keypair()
    other = sealing.generate_keypair()
    secret = "http://portal.example/r/bfl_secret-token"
    blob = sealing.seal(pair.public, secret)
    assert secret not in blob
    assert "bfl_secret-token" not in blob
    assert sealing.open_sealed(pair.private, blob) == secret
    with pytest.raises(sealing.SealingError):
        sealing.open_sealed(other.private, blob)


def test_each_seal_is_different_and_tampering_is_detected() -> None:
    pair = sealing.generate_keypair()
    first, second = sealing.seal(pair.public, "123456"), sealing.seal(pair.public, "123456")
    assert first != second  # ephemeral sender key: equal codes are not recognisable
    flipped = first[:10] + ("A" if first[10] != "A" else "B") + first[11:]
    with pytest.raises(sealing.SealingError):
        sealing.open_sealed(pair.private, flipped)
    with pytest.raises(sealing.SealingError):
        sealing.open_sealed(pair.private, "not base64 at all!")


def test_public_key_is_derived_from_the_private_key() -> None:
    pair = sealing.generate_keypair()
    assert sealing.public_key_of(pair.private) == pair.public


@pytest.mark.parametrize("bad", ["short", "AAAA", "!!!!"])
def test_malformed_keys_are_refused(bad: str) -> None:
    with pytest.raises(sealing.SealingError):
        sealing.check_public_key(bad)
    with pytest.raises(sealing.SealingError):
        sealing.seal(bad, "x")


def test_settings_read_and_check_the_notifier_public_key(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = sealing.generate_keypair()
    monkeypatch.setenv("BILLFOLD_NOTIFIER_PUBLIC_KEY", pair.public)
    assert Settings().notifier_public_key == pair.public
    monkeypatch.setenv("BILLFOLD_NOTIFIER_PUBLIC_KEY", "")
    assert Settings().notifier_public_key is None
    monkeypatch.setenv("BILLFOLD_NOTIFIER_PUBLIC_KEY", "nope")
    with pytest.raises(ValueError, match="public key"):
        Settings()
