"""Sealed idempotent responses: only the right key opens them, and tampering shows."""

from session_api import sealing


def test_round_trip_with_the_same_key() -> None:
    key = sealing.derive_key("bf_sk_example", "billfold-idempotency:site_1:key-1")
    sealed = sealing.seal(key, b'{"token": "bfl_secret"}')
    assert b"bfl_secret" not in sealed
    assert sealing.unseal(key, sealed) == b'{"token": "bfl_secret"}'


def test_each_seal_uses_a_fresh_nonce() -> None:
    key = sealing.derive_key("bf_sk_example", "ctx")
    assert sealing.seal(key, b"same") != sealing.seal(key, b"same")


def test_another_api_key_or_context_cannot_open_it() -> None:
    key = sealing.derive_key("bf_sk_example", "billfold-idempotency:site_1:key-1")
    sealed = sealing.seal(key, b"payload")
    other_secret = sealing.derive_key("bf_sk_other", "billfold-idempotency:site_1:key-1")
    other_context = sealing.derive_key("bf_sk_example", "billfold-idempotency:site_1:key-2")
    assert sealing.unseal(other_secret, sealed) is None
    assert sealing.unseal(other_context, sealed) is None


def test_tampered_or_truncated_data_is_refused() -> None:
    key = sealing.derive_key("bf_sk_example", "ctx")
    sealed = bytearray(sealing.seal(key, b"payload"))
    sealed[15] ^= 0x01
    assert sealing.unseal(key, bytes(sealed)) is None
    assert sealing.unseal(key, b"short") is None
