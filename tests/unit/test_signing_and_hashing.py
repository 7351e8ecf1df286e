"""Signed tokens, password hashes and API tokens."""

from __future__ import annotations

import hashlib

import pytest
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from server.security.secrets_hashing import (
    hash_api_token,
    hash_password,
    new_api_token,
    token_prefix,
    verify_password,
)
from server.security.signing import Signer, TokenError

signer = Signer(b"k" * 40)


def test_signed_payload_round_trips() -> None:
    token = signer.sign("page-session", {"sid": "abc"}, ttl_seconds=60, now=1000)
    assert signer.verify("page-session", token, now=1010)["sid"] == "abc"


def test_expired_token_is_refused_with_reason() -> None:
    token = signer.sign("page-session", {"sid": "abc"}, ttl_seconds=60, now=1000)
    with pytest.raises(TokenError) as caught:
        signer.verify("page-session", token, now=1061)
    assert caught.value.code == "expired"


@pytest.mark.parametrize(
    "mangle", [lambda t: t[:-2] + "xy", lambda t: "e30" + t[3:], lambda t: "nodot", lambda t: ""]
)
def test_forged_or_malformed_token_is_refused(mangle: object) -> None:
    token = signer.sign("page-session", {"sid": "abc"}, ttl_seconds=60)
    with pytest.raises(TokenError) as caught:
        signer.verify("page-session", mangle(token))  # type: ignore[operator]
    assert caught.value.code == "invalid"


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _flip_unused_bit(token: str) -> str:
    """The same MAC bytes spelled differently: a 32-byte MAC leaves two unused bits in its last character."""
    last = B64URL.index(token[-1])
    return token[:-1] + B64URL[last ^ 1]


@pytest.mark.parametrize(
    "respell",
    [
        lambda t: t + "!!!!",
        lambda t: t + "==",
        lambda t: t[:-6] + "." + t[-6:],
        lambda t: t[:3] + "." + t[3:],
        lambda t: t.replace(".", ".."),
        _flip_unused_bit,
        lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + " ",
    ],
)
def test_a_valid_token_has_exactly_one_spelling(respell: object) -> None:
    token = signer.sign("page-session", {"sid": "abc"}, ttl_seconds=60)
    variant = respell(token)  # type: ignore[operator]
    assert variant != token
    with pytest.raises(TokenError) as caught:
        signer.verify("page-session", variant)
    assert caught.value.code == "invalid"


def test_token_of_one_kind_never_verifies_as_another() -> None:
    token = signer.sign("page-session", {"sid": "abc"}, ttl_seconds=60)
    with pytest.raises(TokenError):
        signer.verify("whep-target", token)


def test_token_from_another_secret_is_refused() -> None:
    token = Signer(b"other" * 10).sign("page-session", {"sid": "abc"}, ttl_seconds=60)
    with pytest.raises(TokenError):
        signer.verify("page-session", token)


def test_passwords_are_salted_argon2_and_verified() -> None:
    first, second = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert first != second and "correct" not in first and first.startswith("$argon2id$")
    assert verify_password("correct horse battery", first) == (True, None)
    assert verify_password("wrong horse battery", first)[0] is False
    assert verify_password("anything", "garbage") == (False, None)
    assert verify_password("anything", None) == (False, None)  # unknown account


def test_weaker_hashes_are_replaced_at_the_next_sign_in() -> None:
    legacy = (  # scrypt, as `create-admin` stored passwords before argon2
        "scrypt$16384$8$1$00112233445566778899aabbccddeeff$"
        + hashlib.scrypt(
            b"correct horse battery",
            salt=bytes.fromhex("00112233445566778899aabbccddeeff"),
            n=16384,
            r=8,
            p=1,
        ).hex()
    )
    ok, upgraded = verify_password("correct horse battery", legacy)
    assert ok and upgraded is not None and upgraded.startswith("$argon2id$")
    assert verify_password("wrong horse battery", legacy) == (False, None)
    cheap = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=8192),)).hash("correct horse battery")
    ok, rehashed = verify_password("correct horse battery", cheap)
    assert ok and rehashed is not None and rehashed != cheap


def test_api_tokens_are_random_and_only_their_hash_is_kept() -> None:
    token = new_api_token()
    assert token.token not in token.token_hash
    assert hash_api_token(token.token) == token.token_hash
    assert token_prefix(token.token) == token.prefix
    assert token_prefix("Bearer nonsense") is None
    assert new_api_token().token != token.token
