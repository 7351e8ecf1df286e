"""Admin passwords (argon2id via pwdlib, rehashed when the parameters change) and API tokens (random,
stored as SHA-256)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

TOKEN_PREFIX = "abff"  # noqa: S105 - a public marker, not a secret
_passwords = PasswordHash((Argon2Hasher(),))
# Verified against when the email is unknown, so a sign-in takes as long whether or not the account exists.
_DUMMY_HASH = _passwords.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _passwords.hash(password)


def _verify_legacy_scrypt(password: str, stored: str) -> bool:
    """Hashes written before argon2 (scrypt$n$r$p$salt$digest); rehashed at the next sign-in."""
    try:
        _scheme, n, r, p, salt, digest = stored.split("$")
        candidate = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 1024 * 1024
        )
    except ValueError:
        return False
    return hmac.compare_digest(candidate.hex(), digest)


def verify_password(password: str, stored: str | None) -> tuple[bool, str | None]:
    """(matches, new hash to store or None). `stored` None: an unknown account, answered just as slowly."""
    if stored is None:
        _passwords.verify(password, _DUMMY_HASH)
        return False, None
    if stored.startswith("scrypt$"):
        ok = _verify_legacy_scrypt(password, stored)
        return ok, hash_password(password) if ok else None
    try:
        return _passwords.verify_and_update(password, stored)
    except Exception:  # an unreadable stored hash is a failed sign-in, not a crash
        return False, None


@dataclass(frozen=True)
class NewApiToken:
    token: str  # shown once, never stored
    prefix: str
    token_hash: str


def hash_api_token(token: str) -> str:
    # Tokens carry 256 bits of randomness, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_token() -> NewApiToken:
    prefix = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewApiToken(token=token, prefix=prefix, token_hash=hash_api_token(token))


def token_prefix(token: str) -> str | None:
    """The lookup prefix of a presented token, or None if it is not shaped like ours."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != 8:
        return None
    return parts[1]
