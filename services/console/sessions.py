"""The operator page's sign-in sessions, kept in PostgreSQL.

Signing in takes an admin API key, checked by the same look-up as the API's (shared/auth.py):
the key must exist, not be revoked, and have the `admin` scope. The browser then holds a random
session token in a Secure, HttpOnly, SameSite=Strict cookie; the table keeps only its SHA-256
digest (like API keys: random tokens need no slow hash), with the key's id and name, the form
(CSRF) token and the expiry. Every request looks the session up with its key, so revoking the
key (or taking its admin scope away) ends the session at the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, ForeignKey, Integer, String, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.auth import ApiKey, Scope, authenticate
from shared.db import Base

# An operator signs in again after this long, whatever they did meanwhile.
SESSION_LIFETIME = timedelta(hours=12)


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    token_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    api_key_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("api_keys.id", ondelete="CASCADE"), index=True
    )
    key_name: Mapped[str] = mapped_column(String(128))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


@dataclass(frozen=True)
class Operator:
    """Who is signed in: the admin key (as the API sees it) and the session's form token."""

    key: ApiKey
    csrf_token: str

    @property
    def name(self) -> str:
        return self.key.name


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def sign_in(session: AsyncSession, api_key: str, now: datetime) -> tuple[str, Operator]:
    """A new session for an admin key; the session token (for the cookie) and the operator.
    Raises Unauthorized (unknown or revoked key) or Forbidden (no admin scope), as the API
    would. Expired sessions are cleared on the way."""
    key = await authenticate(session, f"Bearer {api_key}", Scope.ADMIN)
    await session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        token_digest=digest(token),
        api_key_id=key.id,
        key_name=key.name,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=now + SESSION_LIFETIME,
    )
    session.add(row)
    await session.flush()
    return token, Operator(key=key, csrf_token=row.csrf_token)


async def signed_in(session: AsyncSession, token: str | None, now: datetime) -> Operator | None:
    """The operator of a session token, or None: no such session, expired, or its key revoked
    or no longer admin. A session found dead is deleted."""
    if not token:
        return None
    found = (
        await session.execute(
            select(ConsoleSession, ApiKey)
            .join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
            .where(ConsoleSession.token_digest == digest(token))
        )
    ).first()
    if found is None:
        return None
    row, key = found
    alive = (
        row.expires_at > now and key.revoked_at is None and Scope.ADMIN.value in (key.scopes or [])
    )
    if not alive:
        await session.delete(row)
        await session.flush()
        return None
    return Operator(key=key, csrf_token=row.csrf_token)


async def sign_out(session: AsyncSession, token: str) -> None:
    await session.execute(
        delete(ConsoleSession).where(ConsoleSession.token_digest == digest(token))
    )
