import hashlib
import hmac

import pytest

from billfold import tokens


def test_generated_tokens_are_prefixed_random_and_long() -> None:
    seen = {tokens.generate(tokens.LINK_TOKEN_PREFIX) for _ in range(1000)}
    assert len(seen) == 1000
    for token in seen:
        assert token.startswith("bfl_")
        # 32 random bytes in base64url: 43 characters, 256 bits of entropy.
        assert len(token) == len("bfl_") + 43


def test_key_kinds() -> None:
    secret = tokens.generate_key("secret")
    publishable = tokens.generate_key("publishable")
    assert secret.startswith("bf_sk_")
    assert tokens.key_kind(secret) == "secret"
    assert publishable.startswith("bf_pk_")
    assert tokens.key_kind(publishable) == "publishable"
    assert tokens.key_kind("sk_test_123") is None


def test_hash_is_sha256_hex_and_matches_through_compare_digest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Timing cannot be measured reliably in a test; what makes the comparison constant
    # time is that it goes through hmac.compare_digest, so that is what is checked.
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    token = tokens.generate(tokens.LINK_TOKEN_PREFIX)
    digest = tokens.hash_token(token)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert tokens.matches(token, digest)
    assert not tokens.matches(token + "x", digest)
    assert compared == [
        (digest.encode(), digest.encode()),
        (tokens.hash_token(token + "x").encode(), digest.encode()),
    ]


def test_hint_shows_only_prefix_and_last_four() -> None:
    key = tokens.generate_key("secret")
    hint = tokens.hint(key)
    assert hint == f"bf_sk_…{key[-4:]}"
    assert key[6:-4] not in hint


def test_codes_are_six_digits_and_salted() -> None:
    code = tokens.generate_code()
    assert len(code) == 6
    assert code.isdigit()
    salt_a, salt_b = tokens.new_salt(), tokens.new_salt()
    assert tokens.hash_code(code, salt_a) != tokens.hash_code(code, salt_b)
    assert tokens.code_matches(code, salt_a, tokens.hash_code(code, salt_a))
    assert not tokens.code_matches(
        "000000" if code != "000000" else "111111", salt_a, tokens.hash_code(code, salt_a)
    )
