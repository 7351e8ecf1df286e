"""Admin accounts (the admin console signs them in; the command line creates them)."""

from __future__ import annotations

from sqlalchemy import select

from server.db import Database
from server.errors import Conflict, Invalid
from server.models import AdminUser
from server.security.secrets_hashing import hash_password

MIN_PASSWORD_LENGTH = 12


def normalise_email(email: str) -> str:
    value = email.strip().lower()
    if "@" not in value or len(value) > 254:
        raise Invalid("invalid_email", f"{email!r} is not an email address")
    return value


async def create_admin(db: Database, email: str, password: str) -> str:
    """Store a new admin with a hashed password; returns the normalised email."""
    address = normalise_email(email)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid("weak_password", f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    async with db.transaction() as session:
        if await session.scalar(select(AdminUser.id).where(AdminUser.email == address)) is not None:
            raise Conflict("admin_exists", f"an admin with email {address} already exists")
        session.add(AdminUser(email=address, password_hash=hash_password(password)))
    return address
