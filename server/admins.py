"""Admin accounts and their console sessions (the command line creates accounts; the console signs in)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select

from server.db import Database
from server.errors import Conflict, Invalid
from server.models import ADMIN_ROLES, AdminSession, AdminUser, utcnow
from server.security.secrets_hashing import hash_password, verify_password

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # argon2 takes any length; this only bounds the work one request can ask for
LAST_SEEN_RESOLUTION = timedelta(minutes=1)  # a session row is written at most once a minute


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if "@" not in value or len(value) > 254:
        raise Invalid("invalid_email", f"{email!r} is not an email address")
    return value


async def create_admin(db: Database, email: str, password: str, role: str = "admin") -> str:
    """Store a new admin with a hashed password; returns the normalised email."""
    address = normalise_email(email)
    if role not in ADMIN_ROLES:
        raise Invalid("invalid_role", f"the role must be one of: {', '.join(ADMIN_ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid("weak_password", f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Invalid("long_password", f"the password may have at most {MAX_PASSWORD_LENGTH} characters")
    hashed = await asyncio.to_thread(hash_password, password)
    async with db.transaction() as session:
        if await session.scalar(select(AdminUser.id).where(AdminUser.email == address)) is not None:
            raise Conflict("admin_exists", f"an admin with email {address} already exists")
        session.add(AdminUser(email=address, password_hash=hashed, role=role))
    return address


@dataclass(frozen=True)
class SignedIn:
    """The admin behind a console request."""

    session_id: str
    admin_id: int
    email: str
    role: str
    csrf_token: str

    @property
    def can_change(self) -> bool:
        return self.role == "admin"


def _session_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def check_password(db: Database, email: str, password: str) -> int | None:
    """The admin's id when the password matches, else None (as slowly for an unknown email).

    A hash made with older parameters (or scrypt, before argon2) is replaced on success.
    """
    try:
        address = normalise_email(email)
    except Invalid:
        address = ""
    async with db.reading() as session:
        admin = await session.scalar(select(AdminUser).where(AdminUser.email == address)) if address else None
    stored = admin.password_hash if admin is not None else None
    ok, new_hash = await asyncio.to_thread(verify_password, password[:MAX_PASSWORD_LENGTH], stored)
    if not ok or admin is None:
        return None
    async with db.transaction() as session:
        row = await session.get(AdminUser, admin.id)
        if row is not None:
            row.last_login_at = utcnow()
            if new_hash is not None:
                row.password_hash = new_hash
    return admin.id


async def start_session(db: Database, admin_id: int, replacing: str | None = None) -> str:
    """A new session for the admin; returns its secret (the cookie's). A session the browser already
    presented is ended, so a session id planted before sign-in never becomes a signed-in one."""
    secret = secrets.token_urlsafe(32)
    async with db.transaction() as session:
        if replacing:
            await session.execute(delete(AdminSession).where(AdminSession.id == _session_key(replacing)))
        session.add(
            AdminSession(id=_session_key(secret), admin_id=admin_id, csrf_token=secrets.token_urlsafe(32))
        )
    return secret


async def session_of(db: Database, secret: str, idle: timedelta, lifetime: timedelta) -> SignedIn | None:
    """The signed-in admin for a cookie's secret, or None when unknown, idle too long or too old."""
    key = _session_key(secret)
    now = utcnow()
    async with db.reading() as session:
        found = (
            await session.execute(
                select(AdminSession, AdminUser).join(AdminUser).where(AdminSession.id == key)
            )
        ).one_or_none()
    if found is None:
        return None
    row, admin = found
    if now - row.last_seen_at > idle or now - row.created_at > lifetime:
        await end_session(db, secret)
        return None
    if now - row.last_seen_at > LAST_SEEN_RESOLUTION:
        async with db.transaction() as session:
            stored = await session.get(AdminSession, key)
            if stored is not None:
                stored.last_seen_at = now
    return SignedIn(key, admin.id, admin.email, admin.role, row.csrf_token)


async def end_session(db: Database, secret: str) -> None:
    async with db.transaction() as session:
        await session.execute(delete(AdminSession).where(AdminSession.id == _session_key(secret)))


async def purge_sessions(db: Database, idle: timedelta, lifetime: timedelta) -> int:
    """Forget sessions past either limit (housekeeping); returns how many."""
    now = utcnow()
    async with db.transaction() as session:
        result = await session.execute(
            delete(AdminSession).where(
                (AdminSession.last_seen_at < now - idle) | (AdminSession.created_at < now - lifetime)
            )
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
